//! Scenario tests of `decide_fixed()`, the container image's seed modes: each builds one
//! observation and checks the step and its sentence. The seeds' behaviours are named (S2, S9, S10).

use pgrepl_core::fixed::{points_at_itself, wants_upstream};
use pgrepl_core::*;

const OURS: SystemId = SystemId(7_000_000_000_000_000_001);
const THEIRS: SystemId = SystemId(7_000_000_000_000_000_002);

fn master() -> Upstream {
    Upstream { host: "pg-master".into(), port: 5432 }
}

fn running_primary() -> Server {
    Server::Primary { timeline: Timeline(1), lsn: Lsn(0x3000000) }
}

fn replica(streaming: bool, timeline: u32) -> Server {
    Server::Replica {
        timeline: Timeline(timeline),
        receive_lsn: Lsn(0x3000000),
        replay_lsn: Lsn(0x3000000),
        replay_timeline: Some(Timeline(1)),
        upstream: Some(master()),
        streaming,
    }
}

fn answered(primary: bool, timeline: u32) -> UpstreamState {
    UpstreamState::Answered { system_id: OURS, timeline: Timeline(timeline), primary }
}

/// A fresh start of a member with nothing on disk.
fn obs(role: FixedRole) -> FixedObservation {
    FixedObservation {
        role,
        destroy_pending: false,
        data: DataDir::Missing,
        bootstrap_unfinished: false,
        server: Server::Stopped,
        passwords_applied: false,
        stalled: false,
        upstream: UpstreamState::Unknown,
    }
}

fn replica_role() -> FixedRole {
    FixedRole::Replica { upstream: master(), promote: false }
}

fn promoting_role() -> FixedRole {
    FixedRole::Replica { upstream: master(), promote: true }
}

fn decided(o: &FixedObservation) -> (FixedAction, String) {
    let d = decide_fixed(o);
    (d.action, d.reason.to_string())
}

#[test]
fn an_empty_primary_bootstraps_then_starts_then_resets_its_passwords_on_every_start() {
    let mut o = obs(FixedRole::Primary);
    assert_eq!(decide_fixed(&o).action, FixedAction::Bootstrap);
    o.data = DataDir::Primary { system_id: OURS };
    assert_eq!(decide_fixed(&o).action, FixedAction::StartPrimary);
    o.server = running_primary();
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::SetPasswords);
    assert!(reason.contains("resetting every password"), "{reason}");
    o.passwords_applied = true;
    assert_eq!(decide_fixed(&o).action, FixedAction::Nothing);
}

#[test]
fn an_unfinished_bootstrap_is_resumed_not_taken_for_data() {
    let mut o = obs(FixedRole::Primary);
    o.data = DataDir::Primary { system_id: OURS };
    o.bootstrap_unfinished = true;
    assert_eq!(decide_fixed(&o).action, FixedAction::Bootstrap);
}

#[test]
fn a_primary_given_a_replicas_data_starts_it_and_promotes_it_onto_a_new_timeline() {
    let mut o = obs(FixedRole::Primary);
    o.data = DataDir::Standby { system_id: OURS };
    assert_eq!(decide_fixed(&o).action, FixedAction::StartReplica);
    o.server = replica(false, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::Promote);
}

#[test]
fn s2_an_empty_replica_waits_for_its_primary_and_says_why() {
    let mut o = obs(replica_role());
    o.upstream = UpstreamState::Unreachable { why: "connection refused".into() };
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::Wait);
    assert_eq!(reason, "waiting for the primary at pg-master:5432 to accept connections: connection refused");
    o.upstream = answered(false, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::Wait, "an upstream in recovery is not cloned yet");
    o.upstream = answered(true, 1);
    assert_eq!(decided(&o), (FixedAction::Clone, "cloning the primary at pg-master:5432 (pg_basebackup)".into()));
}

#[test]
fn s9_destroy_on_restart_wipes_a_replica_once_and_only_when_its_primary_answers() {
    let mut o = obs(replica_role());
    o.data = DataDir::Standby { system_id: OURS };
    o.destroy_pending = true;
    o.upstream = UpstreamState::Unreachable { why: "no such host".into() };
    assert_eq!(decide_fixed(&o).action, FixedAction::Wait, "never empty a replica while its primary is away");
    o.upstream = answered(true, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::Reinitialize);
    // The wipe was done: the empty directory is cloned.
    o.destroy_pending = false;
    o.data = DataDir::Missing;
    assert_eq!(decide_fixed(&o).action, FixedAction::Clone);
}

#[test]
fn s9_without_destroy_a_replica_resumes_with_its_data_even_while_its_primary_is_down() {
    let mut o = obs(replica_role());
    o.data = DataDir::Standby { system_id: OURS };
    o.upstream = UpstreamState::Unreachable { why: "connection refused".into() };
    assert_eq!(decide_fixed(&o).action, FixedAction::StartReplica);
    o.server = replica(false, 1);
    o.passwords_applied = true;
    assert_eq!(decided(&o), (FixedAction::Nothing, "replica of pg-master:5432, not streaming yet".into()));
    o.server = replica(true, 1);
    assert_eq!(decided(&o), (FixedAction::Nothing, "replica, streaming from pg-master:5432".into()));
}

#[test]
fn s9_without_destroy_an_empty_replica_still_clones() {
    let mut o = obs(replica_role());
    o.upstream = answered(true, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::Clone);
}

#[test]
fn a_destroy_on_restart_never_wipes_a_primarys_data() {
    let mut o = obs(replica_role());
    o.data = DataDir::Primary { system_id: OURS };
    o.destroy_pending = true;
    o.upstream = answered(true, 2);
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::Rewind);
    assert!(reason.contains("was a primary's: rewinding it onto pg-master:5432"), "{reason}");
}

#[test]
fn data_of_another_cluster_is_refused_and_left_untouched() {
    let mut o = obs(replica_role());
    o.data = DataDir::Standby { system_id: THEIRS };
    o.upstream = answered(true, 1);
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::Refuse);
    assert!(decide_fixed(&o).is_fatal());
    assert!(reason.contains("belongs to another cluster"), "{reason}");
    assert!(reason.contains("left untouched"), "{reason}");
    // A former primary of another cluster is refused too, even with destroy_on_restart.
    o.data = DataDir::Primary { system_id: THEIRS };
    o.destroy_pending = true;
    assert_eq!(decide_fixed(&o).action, FixedAction::Refuse);
    // A replica's data of another cluster is replaced only when configuration says so.
    o.data = DataDir::Standby { system_id: THEIRS };
    assert_eq!(decide_fixed(&o).action, FixedAction::Reinitialize);
}

#[test]
fn an_upstream_that_is_this_container_is_refused() {
    let mut o = obs(replica_role());
    o.upstream = UpstreamState::Itself;
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::Refuse);
    assert!(reason.contains("is this container itself"), "{reason}");
    let me: std::net::IpAddr = "172.18.0.3".parse().unwrap();
    let other: std::net::IpAddr = "172.18.0.2".parse().unwrap();
    assert!(points_at_itself(&[me], &[me], 5432, 5432));
    assert!(points_at_itself(&["127.0.0.1".parse().unwrap()], &[me], 5432, 5432));
    assert!(!points_at_itself(&[other], &[me], 5432, 5432));
    assert!(!points_at_itself(&[me], &[me], 7777, 5432), "another port on this host is another server");
}

#[test]
fn s10_promote_works_while_the_primary_is_down_and_stays_primary_across_restarts() {
    let mut o = obs(promoting_role());
    o.data = DataDir::Standby { system_id: OURS };
    o.upstream = UpstreamState::Unreachable { why: "connection refused".into() };
    o.destroy_pending = true; // the seed's default; promotion wins over it
    assert_eq!(decide_fixed(&o).action, FixedAction::StartReplica);
    o.server = replica(false, 1);
    assert_eq!(decided(&o), (FixedAction::Promote, "promoting this replica to primary (PROMOTE_MASTER)".into()));
    o.server = running_primary();
    o.data = DataDir::Primary { system_id: OURS };
    assert_eq!(decide_fixed(&o).action, FixedAction::SetPasswords);
    // Restarted with PROMOTE_MASTER still set: a primary, never back to a replica.
    let mut again = obs(promoting_role());
    again.data = DataDir::Primary { system_id: OURS };
    again.destroy_pending = true;
    assert_eq!(decide_fixed(&again).action, FixedAction::StartPrimary);
}

#[test]
fn s10_a_replica_that_was_never_cloned_refuses_to_promote_an_empty_directory() {
    let o = obs(promoting_role());
    let (action, reason) = decided(&o);
    assert_eq!(action, FixedAction::Refuse);
    assert!(reason.contains("never cloned"), "{reason}");
}

#[test]
fn s10_the_old_master_started_as_a_replica_of_the_promoted_node_is_rewound() {
    let mut o = obs(FixedRole::Replica { upstream: Upstream { host: "pg-slave".into(), port: 5432 }, promote: false });
    o.data = DataDir::Primary { system_id: OURS };
    o.upstream = UpstreamState::Unreachable { why: "connection refused".into() };
    assert_eq!(decide_fixed(&o).action, FixedAction::Wait, "a rewind needs its source");
    o.upstream = answered(true, 2);
    assert_eq!(decide_fixed(&o).action, FixedAction::Rewind);
}

#[test]
fn a_replica_running_as_a_primary_is_stopped_before_it_is_rewound() {
    let mut o = obs(replica_role());
    o.data = DataDir::Primary { system_id: OURS };
    o.server = running_primary();
    o.upstream = answered(true, 2);
    assert_eq!(decide_fixed(&o).action, FixedAction::Stop);
}

#[test]
fn a_stalled_replica_behind_a_newer_timeline_rewinds_but_one_merely_cut_off_waits() {
    let mut o = obs(replica_role());
    o.data = DataDir::Standby { system_id: OURS };
    o.server = replica(false, 1);
    o.passwords_applied = true;
    o.stalled = true;
    o.upstream = answered(true, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::Nothing, "same timeline: a rewind would not help");
    o.upstream = answered(true, 2);
    assert_eq!(decide_fixed(&o).action, FixedAction::Rewind);
    o.stalled = false;
    assert_eq!(decide_fixed(&o).action, FixedAction::Nothing, "not stalled yet: give streaming a chance");
}

#[test]
fn a_running_replica_writes_its_password_file_once_per_start() {
    let mut o = obs(replica_role());
    o.data = DataDir::Standby { system_id: OURS };
    o.server = replica(true, 1);
    assert_eq!(decide_fixed(&o).action, FixedAction::WritePassfile);
    o.passwords_applied = true;
    assert_eq!(decide_fixed(&o).action, FixedAction::Nothing);
}

#[test]
fn only_a_replica_that_does_not_stream_asks_its_upstream() {
    assert!(!wants_upstream(&FixedRole::Primary, &Server::Stopped));
    assert!(!wants_upstream(&promoting_role(), &Server::Stopped));
    assert!(wants_upstream(&replica_role(), &Server::Stopped));
    assert!(wants_upstream(&replica_role(), &replica(false, 1)));
    assert!(!wants_upstream(&replica_role(), &replica(true, 1)));
}

/// Every combination of the fixtures: nothing but `Reinitialize` deletes data, and only for a
/// replica's data with destroy_on_restart pending; a primary-shaped directory is never deleted;
/// only a primary role or a promoting replica ever promotes or starts as a primary.
#[test]
fn no_combination_deletes_what_configuration_does_not_allow_or_promotes_a_plain_replica() {
    let roles = [FixedRole::Primary, replica_role(), promoting_role()];
    let datas = [
        DataDir::Missing,
        DataDir::Primary { system_id: OURS },
        DataDir::Standby { system_id: OURS },
        DataDir::Standby { system_id: THEIRS },
    ];
    let servers = [Server::Stopped, running_primary(), replica(false, 1), replica(true, 1)];
    let upstreams = [
        UpstreamState::Unknown,
        UpstreamState::Unreachable { why: "x".into() },
        UpstreamState::Itself,
        answered(true, 1),
        answered(true, 2),
        answered(false, 1),
    ];
    let mut seen = 0;
    for role in &roles {
        for data in &datas {
            for server in &servers {
                for upstream in &upstreams {
                    for (destroy_pending, stalled, applied, unfinished) in
                        (0..16).map(|b| (b & 1 != 0, b & 2 != 0, b & 4 != 0, b & 8 != 0))
                    {
                        let o = FixedObservation {
                            role: role.clone(),
                            destroy_pending,
                            data: data.clone(),
                            bootstrap_unfinished: unfinished,
                            server: server.clone(),
                            passwords_applied: applied,
                            stalled,
                            upstream: upstream.clone(),
                        };
                        let d = decide_fixed(&o);
                        seen += 1;
                        if d.action == FixedAction::Reinitialize {
                            assert!(destroy_pending, "{o:?}");
                            assert!(matches!(data, DataDir::Standby { .. }), "{o:?}");
                            assert!(matches!(upstream, UpstreamState::Answered { primary: true, .. }), "{o:?}");
                        }
                        if matches!(d.action, FixedAction::Promote | FixedAction::StartPrimary | FixedAction::Bootstrap)
                        {
                            assert!(!matches!(role, FixedRole::Replica { promote: false, .. }), "{o:?} -> {d:?}");
                        }
                        if d.action == FixedAction::Bootstrap {
                            assert!(*data == DataDir::Missing || unfinished, "{o:?}");
                        }
                        assert!(!d.reason.to_string().is_empty());
                    }
                }
            }
        }
    }
    assert_eq!(seen, 3 * 4 * 4 * 6 * 16);
}
