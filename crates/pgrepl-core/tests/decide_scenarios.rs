//! Scenario tests of `decide()`: each builds one observation from small fixtures and checks the
//! action and the reason. No mocks: the observation is the whole input.

mod scenario;

use pgrepl_core::*;
use scenario::*;

fn promote() -> Action {
    Action::Promote { create_slots: vec!["node_1".into(), "node_3".into()], claim_sync: false }
}

#[test]
fn the_bootstrap_member_initializes_a_new_cluster() {
    let d = Scenario::new().me(1).uninitialized().data(DataDir::Missing).decide();
    assert_eq!(d.action, Action::Bootstrap);
    assert_eq!(d.reason, Reason::NewCluster);
}

#[test]
fn other_members_wait_for_the_bootstrap() {
    let d = Scenario::new().uninitialized().data(DataDir::Missing).decide();
    assert_eq!(d, Decision::wait(Reason::WaitingForBootstrap(Some(m(1)))));
}

#[test]
fn data_without_a_cluster_record_is_left_alone() {
    let d = Scenario::new().me(1).uninitialized().data(DataDir::Primary { system_id: SYSTEM }).decide();
    assert_eq!(d, Decision::wait(Reason::DataWithoutCluster(SYSTEM)));
}

#[test]
fn the_bootstrap_member_resumes_its_own_unfinished_bootstrap() {
    let s = Scenario::new().me(1).uninitialized().data(DataDir::Primary { system_id: SYSTEM });
    let s = s.with(|o| o.bootstrap_unfinished = true);
    assert_eq!(s.decide(), Decision::new(Action::Bootstrap, Reason::ResumeBootstrap));
    let other = Scenario::new()
        .me(2)
        .uninitialized()
        .data(DataDir::Primary { system_id: SYSTEM })
        .with(|o| o.bootstrap_unfinished = true);
    assert_eq!(other.decide(), Decision::wait(Reason::DataWithoutCluster(SYSTEM)));
}

#[test]
fn a_data_directory_of_another_cluster_is_never_used() {
    let other = SystemId(99);
    let d = Scenario::new().ready_leader(1).data(DataDir::Standby { system_id: other }).decide();
    assert_eq!(d, Decision::wait(Reason::ForeignData { found: other, cluster: SYSTEM }));
}

#[test]
fn without_a_spec_nothing_happens() {
    let d = Scenario::new().with(|o| o.cluster.spec = None).decide();
    assert_eq!(d, Decision::wait(Reason::NoSpec));
    assert_eq!(d.to_string(), "waiting: the store holds no cluster spec yet");
}

#[test]
fn a_member_removed_from_the_spec_does_nothing() {
    let d = Scenario::new().me(7).decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::NotInSpec));
}

#[test]
fn a_new_replica_clones_once_the_leader_holds_its_slot() {
    let s = Scenario::new().data(DataDir::Missing).ready_leader(1);
    assert_eq!(s.decide().action, Action::CloneFrom { leader: m(1) });
    let s = s.with(|o| o.cluster.members.get_mut(&m(1)).unwrap().slots.clear());
    assert_eq!(s.decide(), Decision::wait(Reason::WaitingForSlot(m(1))));
}

#[test]
fn a_new_replica_waits_while_the_leader_is_not_running() {
    let d = Scenario::new().data(DataDir::Missing).leader(1).decide();
    assert_eq!(d, Decision::wait(Reason::LeaderNotReady(m(1))));
    let d = Scenario::new().data(DataDir::Missing).decide();
    assert_eq!(d, Decision::wait(Reason::NoLeaderToClone));
}

#[test]
fn destroy_on_restart_wipes_a_replica_only_on_the_first_cycle() {
    let s = Scenario::new().ready_leader(1).with(|o| o.destroy_on_restart = true);
    assert_eq!(s.decide().action, Action::StartAsReplica { leader: Some(m(1)) });
    let s = s.with(|o| o.first_cycle = true);
    assert_eq!(s.decide(), Decision::new(Action::Reinitialize, Reason::DestroyOnRestart));
}

#[test]
fn destroy_on_restart_never_wipes_a_primary_or_the_leader() {
    let d = healthy_leader().with(|o| {
        o.first_cycle = true;
        o.destroy_on_restart = true;
        o.data = DataDir::Standby { system_id: SYSTEM };
        o.server = replica_of(None, false);
    });
    assert_eq!(
        d.decide().action,
        Action::Promote { create_slots: vec!["node_2".into(), "node_3".into()], claim_sync: false }
    );
    let d = Scenario::new().ready_leader(1).data(DataDir::Primary { system_id: SYSTEM }).with(|o| {
        o.first_cycle = true;
        o.destroy_on_restart = true;
    });
    assert_eq!(d.decide().action, Action::Rewind { leader: m(1) });
}

#[test]
fn a_healthy_leader_renews_its_lease() {
    assert_eq!(healthy_leader().decide(), Decision::new(Action::RenewLease, Reason::Healthy));
}

#[test]
fn a_leader_that_just_started_resets_every_password() {
    let d = healthy_leader().with(|o| o.applied_passwords = None).decide();
    let Action::ApplySpec(work) = d.action else { panic!("expected ApplySpec, got {d:?}") };
    assert_eq!(work.passwords, PasswordKind::ALL.to_vec());
}

#[test]
fn a_changed_password_is_applied_by_the_leader() {
    let d = healthy_leader().with(|o| o.cluster.spec.as_mut().unwrap().passwords.bump(PasswordKind::Admin)).decide();
    assert_eq!(d.action, Action::ApplySpec(SpecWork { passwords: vec![PasswordKind::Admin], ..SpecWork::default() }));
    assert_eq!(d.to_string(), "applying the spec: set the admin password(s)");
}

#[test]
fn the_leader_creates_slots_for_new_members_and_drops_inactive_ones_of_removed_members() {
    let d = healthy_leader()
        .with(|o| {
            let spec = o.cluster.spec.as_mut().unwrap();
            spec.members.remove(&m(3));
            spec.members.insert(m(4), MemberSpec { host: "127.0.0.1".into(), port: port(4), stopped: false });
            o.slots[1].active = false;
        })
        .decide();
    let work =
        SpecWork { create_slots: vec!["node_4".into()], drop_slots: vec!["node_3".into()], ..SpecWork::default() };
    assert_eq!(d.action, Action::ApplySpec(work));
}

#[test]
fn an_active_slot_of_a_removed_member_is_kept_until_it_disconnects() {
    let d = healthy_leader().with(|o| {
        o.cluster.spec.as_mut().unwrap().members.remove(&m(3));
    });
    assert_eq!(d.decide().action, Action::RenewLease);
}

#[test]
fn the_leader_records_itself_and_clears_its_fulfilled_promote_request() {
    let d = healthy_leader().with(|o| o.cluster.last_leader = None).target(1).decide();
    let work = SpecWork { record_leader: true, clear_target: true, ..SpecWork::default() };
    assert_eq!(d.action, Action::ApplySpec(work));
}

#[test]
fn the_leader_hands_over_to_a_streaming_target() {
    let d = healthy_leader().target(2).streaming(2).decide();
    assert_eq!(d, Decision::new(Action::Demote { release_lease: true }, Reason::HandOver(m(2))));
}

#[test]
fn the_leader_keeps_the_lease_while_the_target_is_not_streaming() {
    let d = healthy_leader().target(2).decide();
    assert_eq!(d, Decision::new(Action::RenewLease, Reason::TargetNotReady(m(2))));
}

#[test]
fn a_stopped_leader_gives_way_to_a_requested_target() {
    let d = healthy_leader().server(Server::Stopped).target(2).decide();
    assert_eq!(d, Decision::new(Action::ReleaseLease, Reason::GiveWayTo(m(2))));
}

#[test]
fn a_stopped_leader_starts_its_server() {
    let d = healthy_leader().server(Server::Stopped).decide();
    assert_eq!(d.action, Action::StartAsPrimary);
    let d = healthy_leader().server(Server::Stopped).data(DataDir::Standby { system_id: SYSTEM }).decide();
    assert_eq!(d.action, Action::StartAsReplica { leader: None });
}

#[test]
fn a_replica_holding_the_lease_promotes() {
    let d = Scenario::new().leader(2).server(replica_of(Some(1), true)).decide();
    assert_eq!(d, Decision::new(promote(), Reason::HoldsLeaseAsReplica));
}

#[test]
fn a_requested_promote_takes_the_free_lease() {
    let d = Scenario::new().server(replica_of(Some(1), false)).target(2).last_leader(1).decide();
    assert_eq!(d, Decision::new(Action::AcquireLease, Reason::PromoteRequested));
}

#[test]
fn others_wait_for_the_requested_member_to_take_the_lease() {
    let d = Scenario::new().me(3).server(replica_of(Some(1), false)).target(2).last_leader(1).decide();
    assert_eq!(d, Decision::wait(Reason::WaitingForTarget(m(2))));
    let d = Scenario::new()
        .me(1)
        .data(DataDir::Primary { system_id: SYSTEM })
        .server(primary())
        .target(2)
        .last_leader(1)
        .decide();
    assert_eq!(d.action, Action::Demote { release_lease: false });
}

#[test]
fn the_last_leader_takes_back_the_free_lease() {
    let d = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).last_leader(1).decide();
    assert_eq!(d, Decision::new(Action::AcquireLease, Reason::ResumeLeadership));
}

#[test]
fn without_a_leader_and_without_automatic_failover_replicas_wait() {
    let d = Scenario::new()
        .server(replica_of(Some(1), false))
        .last_leader(1)
        .with(|o| o.cluster.spec.as_mut().unwrap().failover.automatic = false)
        .decide();
    assert_eq!(d, Decision::wait(Reason::NoLeaderManual(Some(m(1)))));
}

#[test]
fn a_primary_that_is_not_the_last_leader_demotes_when_nobody_leads() {
    let d =
        Scenario::new().me(3).data(DataDir::Primary { system_id: SYSTEM }).server(primary()).last_leader(2).decide();
    assert_eq!(d, Decision::new(Action::Demote { release_lease: false }, Reason::PrimaryWithoutLease(Some(m(2)))));
}

#[test]
fn a_primary_demotes_when_another_member_holds_the_lease() {
    let d =
        Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).server(primary()).ready_leader(2).decide();
    assert_eq!(d, Decision::new(Action::Demote { release_lease: false }, Reason::AnotherLeader(m(2))));
}

#[test]
fn a_stopped_former_primary_rewinds_once_the_new_leader_runs() {
    let s = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).leader(2);
    assert_eq!(s.decide(), Decision::wait(Reason::LeaderNotReady(m(2))));
    let s = s.ready_leader(2);
    assert_eq!(s.decide(), Decision::new(Action::Rewind { leader: m(2) }, Reason::FormerPrimary(m(2))));
}

#[test]
fn a_stopped_standby_starts_following_the_leader_even_before_it_runs() {
    let d = Scenario::new().leader(1).decide();
    assert_eq!(d, Decision::new(Action::StartAsReplica { leader: Some(m(1)) }, Reason::StartFollower(m(1))));
}

#[test]
fn a_replica_pointed_elsewhere_follows_the_new_leader() {
    let d = Scenario::new().me(3).server(replica_of(Some(1), false)).ready_leader(2).decide();
    assert_eq!(d, Decision::new(Action::Follow { leader: m(2) }, Reason::NewUpstream(m(2))));
}

#[test]
fn a_streaming_replica_does_nothing() {
    let d = Scenario::new().server(replica_of(Some(1), true)).ready_leader(1).decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::Streaming(m(1))));
    assert_eq!(d.to_string(), "replica, streaming from node-1");
}

#[test]
fn a_stalled_replica_rewinds_when_the_leader_is_on_a_newer_timeline() {
    let d = Scenario::new()
        .server(replica_of(Some(1), false))
        .ready_leader(1)
        .with(|o| {
            o.replica_stalled = true;
            o.cluster.members.get_mut(&m(1)).unwrap().timeline = Some(Timeline(2));
        })
        .decide();
    assert_eq!(d, Decision::new(Action::Rewind { leader: m(1) }, Reason::Stalled(m(1))));
}

#[test]
fn a_stalled_replica_on_the_leaders_timeline_is_not_rewound() {
    // Cut off or refused (say, a wrong password): rewinding would not help.
    let d =
        Scenario::new().server(replica_of(Some(1), false)).ready_leader(1).with(|o| o.replica_stalled = true).decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::CatchingUp(m(1))));
}

/// `node-2`, a running replica pointed at the ready leader `node-1`, not streaming.
fn not_streaming() -> Scenario {
    Scenario::new().server(replica_of(Some(1), false)).ready_leader(1)
}

fn restart_of(n: u32, secs: u64) -> Decision {
    Decision::new(Action::RestartReplica { leader: m(n) }, Reason::NotStreaming { leader: m(n), secs })
}

#[test]
fn a_replica_that_has_not_streamed_for_the_restart_bound_is_restarted() {
    // Round 5 of a nemesis run: the WAL receiver ended on a lossy link and PostgreSQL tried
    // no more for a minute, while the leader ran fine.
    let d = not_streaming().with(|o| o.replica_not_streaming_long = Some(QUIET)).decide();
    assert_eq!(d, restart_of(1, 10));
    assert_eq!(
        d.to_string(),
        "restarting PostgreSQL: this replica has not streamed from node-1 for 10 s; its WAL receiver may have given up"
    );
    assert!(d.reason.is_warning());
}

#[test]
fn a_replica_not_streaming_for_less_than_the_restart_bound_is_left_to_catch_up() {
    assert_eq!(not_streaming().decide(), Decision::new(Action::Nothing, Reason::CatchingUp(m(1))));
    // Stalled on the leader's timeline, but restarted within the bound: nothing yet.
    let restarted = not_streaming().with(|o| o.replica_stalled = true).decide();
    assert_eq!(restarted, Decision::new(Action::Nothing, Reason::CatchingUp(m(1))));
}

#[test]
fn a_streaming_replica_is_never_restarted() {
    let d = Scenario::new()
        .server(replica_of(Some(1), true))
        .ready_leader(1)
        .with(|o| o.replica_not_streaming_long = Some(QUIET))
        .decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::Streaming(m(1))));
}

#[test]
fn a_replica_not_streaming_from_a_leader_that_is_not_running_is_not_restarted() {
    // The leader holds the lease but does not run as primary (yet): nothing to stream from.
    let d = Scenario::new()
        .server(replica_of(Some(1), false))
        .leader(1)
        .with(|o| o.replica_not_streaming_long = Some(QUIET))
        .decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::CatchingUp(m(1))));
}

#[test]
fn a_replica_pointed_elsewhere_follows_the_leader_rather_than_restart() {
    let d = Scenario::new()
        .server(replica_of(Some(3), false))
        .ready_leader(1)
        .with(|o| o.replica_not_streaming_long = Some(QUIET))
        .decide();
    assert_eq!(d, Decision::new(Action::Follow { leader: m(1) }, Reason::NewUpstream(m(1))));
}

#[test]
fn a_replica_with_a_stale_password_file_rewrites_it_before_any_restart() {
    let d = not_streaming()
        .with(|o| {
            o.replica_not_streaming_long = Some(QUIET);
            o.passfile_password = None;
        })
        .decide();
    assert!(matches!(d.action, Action::ApplySpec(_)), "{d:?}");
}

#[test]
fn a_replica_restarted_in_vain_is_still_rewound_at_the_stall_bound() {
    // The restart clock started afresh at each restart, the stall clock did not: once past
    // stall_timeout behind a newer timeline, the rewind wins over another restart.
    let newer = |o: &mut Observation| o.cluster.members.get_mut(&m(1)).unwrap().timeline = Some(Timeline(2));
    let before = not_streaming().with(newer).with(|o| o.replica_not_streaming_long = Some(QUIET * 2)).decide();
    assert_eq!(before, restart_of(1, 20), "restart first");
    let after = not_streaming()
        .with(newer)
        .with(|o| {
            o.replica_not_streaming_long = Some(QUIET * 3);
            o.replica_stalled = true;
        })
        .decide();
    assert_eq!(after, Decision::new(Action::Rewind { leader: m(1) }, Reason::Stalled(m(1))));
    // On the leader's own timeline a rewind would not help: it keeps being restarted, once per bound.
    let same = not_streaming()
        .with(|o| {
            o.replica_not_streaming_long = Some(QUIET * 3);
            o.replica_stalled = true;
        })
        .decide();
    assert_eq!(same, restart_of(1, 30));
}

#[test]
fn a_paused_replica_that_does_not_stream_is_not_restarted() {
    let s = || not_streaming().with(|o| o.replica_not_streaming_long = Some(QUIET));
    assert_eq!(s().decide().action, Action::RestartReplica { leader: m(1) });
    let d = s().paused().decide();
    assert_eq!(d, paused(Action::Wait, Reason::NoRestartPaused(m(1))));
    assert!(d.reason.is_warning());
    assert_eq!(
        d.to_string(),
        "paused: this replica has not streamed from node-1 for a while; not restarting it in maintenance mode"
    );
}

#[test]
fn a_replica_rewrites_its_password_file_when_the_replication_password_changes() {
    let s = Scenario::new().server(replica_of(Some(1), true)).ready_leader(1);
    let s = s.with(|o| o.cluster.spec.as_mut().unwrap().passwords.bump(PasswordKind::Replication));
    let work = SpecWork { passwords: vec![PasswordKind::Replication], ..SpecWork::default() };
    assert_eq!(s.decide().action, Action::ApplySpec(work));
}

#[test]
fn a_replica_whose_host_holds_an_old_replication_password_says_so_and_streams_on() {
    let stale = |o: &mut Observation| {
        o.cluster.spec.as_mut().unwrap().passwords.bump(PasswordKind::Replication);
        o.stale_secrets = vec![PasswordKind::Replication];
    };
    // Streaming: no password file rewritten with the old password again, a warning instead.
    let d = Scenario::new().server(replica_of(Some(1), true)).ready_leader(1).with(stale).decide();
    let reason = Reason::StaleSecret { kind: PasswordKind::Replication, leader: m(1), streaming: true };
    assert_eq!(d, Decision::new(Action::Nothing, reason));
    assert!(d.reason.is_warning());
    assert!(d.to_string().starts_with("this host's replication password is not the one `pgrepl passwd` gave the cluster: it streams from node-1 over the connection it has, but cannot connect again"), "{d}");
    // Not streaming: no restart either, which would not log in with it.
    let d = not_streaming().with(stale).with(|o| o.replica_not_streaming_long = Some(QUIET)).decide();
    assert_eq!(d.action, Action::Nothing, "{d:?}");
    assert!(matches!(d.reason, Reason::StaleSecret { streaming: false, .. }), "{d:?}");
}

#[test]
fn writing_the_password_file_does_not_count_as_resetting_role_passwords() {
    let d = healthy_leader().with(|o| {
        o.applied_passwords = None;
        o.passfile_password = Some(0);
    });
    let Action::ApplySpec(work) = d.decide().action else { panic!("expected ApplySpec") };
    assert_eq!(work.passwords, PasswordKind::ALL.to_vec());
}

#[test]
fn a_replica_ignores_user_and_admin_password_changes() {
    let s = Scenario::new().server(replica_of(Some(1), true)).ready_leader(1);
    let s = s.with(|o| o.cluster.spec.as_mut().unwrap().passwords.bump(PasswordKind::User));
    assert_eq!(s.decide().action, Action::Nothing);
}

#[test]
fn a_leader_that_lost_its_data_releases_the_lease() {
    let d = Scenario::new().data(DataDir::Missing).leader(2).decide();
    assert_eq!(d, Decision::new(Action::ReleaseLease, Reason::LeaseWithoutData));
}

// ---- maintenance mode (`pgrepl pause`) ----

fn paused(action: Action, reason: Reason) -> Decision {
    Decision::new(action, Reason::Paused(Box::new(reason)))
}

/// The leader `node-1`, its PostgreSQL killed (stopped, primary-shaped data).
fn stopped_leader() -> Scenario {
    Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).leader(1).last_leader(1)
}

#[test]
fn a_paused_primary_keeps_its_lease_and_says_it_is_paused() {
    let d = healthy_leader().paused().decide();
    assert_eq!(d, paused(Action::RenewLease, Reason::Healthy));
    assert_eq!(d.to_string(), "paused: primary, holding the leader lease");
}

#[test]
fn a_paused_leader_does_not_restart_its_stopped_server_and_keeps_the_lease() {
    assert_eq!(stopped_leader().decide().action, Action::StartAsPrimary, "unpaused, it restarts");
    assert_eq!(stopped_leader().paused().decide(), paused(Action::RenewLease, Reason::NotStartingPaused));
    // Down past primary_start_timeout: unpaused it gives way; paused it keeps the lease.
    let overdue = || stopped_leader().with(|o| o.start_overdue = true);
    assert_eq!(overdue().decide(), Decision::new(Action::ReleaseLease, Reason::CannotStart));
    assert_eq!(overdue().paused().decide(), paused(Action::RenewLease, Reason::NotStartingPaused));
}

#[test]
fn paused_replicas_do_not_race_for_a_free_lease() {
    let lost = || {
        leader_lost(0x3000100).with(|o| {
            o.cluster.members.insert(m(3), reported(3, 0x3000000));
        })
    };
    assert_eq!(lost().decide().action, Action::AcquireLease, "unpaused, it races");
    assert_eq!(lost().paused().decide(), paused(Action::Wait, Reason::NoFailoverPaused(Some(m(1)))));
    // Nor does a stopped standby start so that it could race.
    let stopped = || Scenario::new().last_leader(1);
    assert_eq!(stopped().decide().action, Action::StartAsReplica { leader: None });
    assert_eq!(stopped().paused().decide(), paused(Action::Wait, Reason::NotStartingPaused));
}

#[test]
fn a_paused_replica_whose_server_stopped_is_not_restarted() {
    let s = || Scenario::new().ready_leader(1);
    assert_eq!(s().decide().action, Action::StartAsReplica { leader: Some(m(1)) });
    assert_eq!(s().paused().decide(), paused(Action::Wait, Reason::NotStartingPaused));
}

#[test]
fn the_last_leader_still_running_as_primary_takes_its_lease_back_when_paused() {
    let s = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).server(primary()).last_leader(1);
    assert_eq!(s.paused().decide(), paused(Action::AcquireLease, Reason::ResumeLeadership));
    // Stopped, it does not: it would only hold a lease it cannot serve, and nobody may race.
    let stopped = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).last_leader(1);
    assert_eq!(stopped.decide().action, Action::AcquireLease);
    assert_eq!(stopped.paused().decide(), paused(Action::Wait, Reason::NoFailoverPaused(Some(m(1)))));
}

#[test]
fn a_paused_primary_without_the_lease_is_not_demoted() {
    let s = || Scenario::new().me(3).data(DataDir::Primary { system_id: SYSTEM }).server(primary()).last_leader(1);
    assert_eq!(
        s().decide(),
        Decision::new(Action::Demote { release_lease: false }, Reason::PrimaryWithoutLease(Some(m(1))))
    );
    assert_eq!(s().paused().decide(), paused(Action::Wait, Reason::NoDemotionPaused));
    // A requested promote of another member still moves it aside.
    assert_eq!(s().target(2).paused().decide().action, Action::Demote { release_lease: false });
}

#[test]
fn a_paused_primary_still_demotes_when_another_member_was_made_leader() {
    let s = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).server(primary()).ready_leader(2);
    assert_eq!(s.paused().decide(), paused(Action::Demote { release_lease: false }, Reason::AnotherLeader(m(2))));
}

#[test]
fn a_requested_promote_goes_through_in_maintenance_mode() {
    let take = Scenario::new().server(replica_of(Some(1), false)).last_leader(1).target(2).paused();
    assert_eq!(take.decide(), paused(Action::AcquireLease, Reason::PromoteRequested));
    let promote_it = Scenario::new().server(replica_of(Some(1), false)).leader(2).target(2).paused();
    assert_eq!(promote_it.decide(), paused(promote(), Reason::HoldsLeaseAsReplica));
    // The requested member's server was down: it is started, as the request implies.
    let start = Scenario::new().leader(2).target(2).paused();
    assert_eq!(start.decide(), paused(Action::StartAsReplica { leader: None }, Reason::StartLeader));
}

#[test]
fn a_switchover_in_maintenance_mode_hands_over_and_the_former_primary_rejoins() {
    let hand_over = healthy_leader().target(2).streaming(2).paused();
    assert_eq!(hand_over.decide(), paused(Action::Demote { release_lease: true }, Reason::HandOver(m(2))));
    // A stopped leader gives way to a forced target (`failover --to`).
    assert_eq!(stopped_leader().target(2).paused().decide(), paused(Action::ReleaseLease, Reason::GiveWayTo(m(2))));
    let rejoin = Scenario::new().me(1).data(DataDir::Primary { system_id: SYSTEM }).ready_leader(2).paused();
    assert_eq!(rejoin.decide(), paused(Action::Rewind { leader: m(2) }, Reason::FormerPrimary(m(2))));
    let follow = Scenario::new().me(3).server(replica_of(Some(1), true)).ready_leader(2).paused();
    assert_eq!(follow.decide(), paused(Action::Follow { leader: m(2) }, Reason::NewUpstream(m(2))));
}

#[test]
fn a_paused_leader_running_as_a_replica_gives_the_lease_up_rather_than_promote_itself_back() {
    let s = || Scenario::new().me(1).server(replica_of(None, false)).leader(1).last_leader(1);
    assert_eq!(s().decide().action, promote_of(1));
    assert_eq!(s().paused().decide(), paused(Action::ReleaseLease, Reason::DemotedByHandPaused));
}

fn promote_of(n: u32) -> Action {
    let create_slots = (1..=3).filter(|k| *k != n).map(|k| m(k).slot_name()).collect();
    Action::Promote { create_slots, claim_sync: false }
}

#[test]
fn a_paused_replica_is_neither_rewound_nor_wiped() {
    let newer = |o: &mut Observation| {
        o.replica_stalled = true;
        o.cluster.members.get_mut(&m(1)).unwrap().timeline = Some(Timeline(2));
    };
    let stalled = || Scenario::new().server(replica_of(Some(1), false)).ready_leader(1).with(newer);
    assert_eq!(stalled().decide().action, Action::Rewind { leader: m(1) });
    assert_eq!(stalled().paused().decide(), paused(Action::Wait, Reason::NoRewindPaused(m(1))));
    let wipe = || {
        Scenario::new().ready_leader(1).with(|o| {
            o.first_cycle = true;
            o.destroy_on_restart = true;
        })
    };
    assert_eq!(wipe().decide().action, Action::Reinitialize);
    assert_eq!(wipe().paused().decide(), paused(Action::Wait, Reason::NoWipePaused));
}

/// Every combination of this member's server and data, who leads, who led last, the request,
/// and the clocks: paused, no member starts a server, races, gives the lease up for not
/// starting, rewinds a stalled replica, restarts one that does not stream or wipes one unless
/// asked to; every sentence says paused.
#[test]
fn no_paused_combination_fails_over_or_restarts_anything_nobody_asked_for() {
    let servers =
        [Server::Stopped, primary(), replica_of(Some(1), true), replica_of(Some(1), false), replica_of(None, false)];
    let datas = [DataDir::Primary { system_id: SYSTEM }, DataDir::Standby { system_id: SYSTEM }, DataDir::Missing];
    let mut combinations = 0;
    for server in &servers {
        for data in &datas {
            for leader in [None, Some(1), Some(2)] {
                for last in [None, Some(1), Some(2)] {
                    for target in [None, Some(1), Some(3)] {
                        for flags in 0..16u8 {
                            let mut s = Scenario::new().me(1).data(data.clone()).server(server.clone()).paused();
                            if let Some(l) = leader {
                                s = s.ready_leader(l);
                            }
                            if let Some(l) = last {
                                s = s.last_leader(l);
                            }
                            if let Some(t) = target {
                                s = s.target(t);
                            }
                            s = s.streaming(3).with(|o| {
                                o.start_overdue = flags & 1 != 0;
                                o.replica_stalled = flags & 2 != 0;
                                o.first_cycle = flags & 4 != 0;
                                o.destroy_on_restart = flags & 4 != 0;
                                o.replica_not_streaming_long = (flags & 8 != 0).then_some(QUIET);
                            });
                            let d = s.decide();
                            let asked = target == Some(1);
                            let context = format!("{:?} -> {d:?}", s.0);
                            assert!(matches!(d.reason, Reason::Paused(_)), "{context}");
                            assert!(d.to_string().starts_with("paused: "), "{context}");
                            match &d.action {
                                Action::StartAsPrimary | Action::StartAsReplica { .. } => assert!(asked, "{context}"),
                                Action::AcquireLease => assert!(
                                    asked || (last == Some(1) && matches!(server, Server::Primary { .. })),
                                    "{context}"
                                ),
                                Action::Promote { .. } => assert!(asked, "{context}"),
                                Action::Reinitialize | Action::RestartReplica { .. } => panic!("{context}"),
                                Action::Rewind { .. } => assert!(
                                    matches!(d.reason, Reason::Paused(ref r) if matches!(**r, Reason::FormerPrimary(_))),
                                    "{context}"
                                ),
                                Action::ReleaseLease => assert!(
                                    !matches!(d.reason, Reason::Paused(ref r) if **r == Reason::CannotStart),
                                    "{context}"
                                ),
                                _ => {}
                            }
                            combinations += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(combinations, 5 * 3 * 3 * 3 * 3 * 16);
}

// ---- automatic failover: the race for a free lease ----

/// A replica that reported its position (`lsn`) after the lease fell free.
fn reported(n: u32, lsn: u64) -> MemberStatus {
    MemberStatus { lsn: Some(Lsn(lsn)), ..status(n, Role::Replica, MemberState::Recovering) }
}

fn replica_at(lsn: u64) -> Server {
    Server::Replica {
        timeline: Timeline(1),
        receive_lsn: Lsn(lsn),
        replay_lsn: Lsn(lsn),
        replay_timeline: Some(Timeline(1)),
        upstream: Some(Upstream { host: "127.0.0.1".into(), port: port(1) }),
        streaming: false,
    }
}

/// `node-1` led and is gone; seen from `node-2`, a running replica at `lsn`.
fn leader_lost(lsn: u64) -> Scenario {
    Scenario::new().server(replica_at(lsn)).last_leader(1)
}

#[test]
fn the_most_advanced_replica_takes_the_lease_of_a_lost_leader() {
    let s = leader_lost(0x3000100).with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x3000000));
    });
    assert_eq!(s.decide(), Decision::new(Action::AcquireLease, Reason::FailoverRace(Some(m(1)))));
    let behind = leader_lost(0x3000000).with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x3000100));
    });
    assert_eq!(behind.decide(), Decision::wait(Reason::PeerAhead(m(3))));
}

#[test]
fn replicas_at_the_same_position_both_race_and_the_store_picks_one() {
    let s = leader_lost(0x3000000).with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x3000000));
    });
    assert_eq!(s.decide().action, Action::AcquireLease);
}

#[test]
fn a_replica_waits_for_peers_to_report_since_the_lease_fell_free() {
    let s = leader_lost(0x3000100).with(|o| {
        o.cluster.members.insert(m(3), MemberStatus { leader: Some(m(1)), ..reported(3, 0x3000000) });
    });
    assert_eq!(s.decide(), Decision::wait(Reason::AwaitingPosition(m(3))));
}

#[test]
fn the_dead_primarys_stale_status_does_not_hold_up_the_race() {
    let s = leader_lost(0x3000000).with(|o| {
        o.cluster
            .members
            .insert(m(1), MemberStatus { leader: Some(m(1)), ..status(1, Role::Primary, MemberState::Running) });
    });
    assert_eq!(s.decide().action, Action::AcquireLease);
}

#[test]
fn a_replica_too_far_behind_the_lost_leader_may_not_take_over() {
    let s = leader_lost(0x1000000).with(|o| {
        o.cluster.members.insert(m(1), status(1, Role::Primary, MemberState::Running));
    });
    assert_eq!(s.decide(), Decision::wait(Reason::TooFarBehind { lag: 0x2000000, max: 1024 * 1024 }));
}

#[test]
fn a_replica_on_an_older_timeline_may_not_take_over() {
    let s = leader_lost(0x3000000).with(|o| {
        o.cluster.last_leader = Some(LeaderRecord { member: m(1), timeline: Some(Timeline(2)), history: None })
    });
    assert_eq!(s.decide(), Decision::wait(Reason::OlderTimeline { mine: Timeline(1), theirs: Timeline(2) }));
}

#[test]
fn a_stopped_replica_starts_without_a_leader_so_it_can_take_over() {
    let d = Scenario::new().last_leader(1).decide();
    assert_eq!(d, Decision::new(Action::StartAsReplica { leader: None }, Reason::StartWithoutLeader));
}

#[test]
fn a_leader_whose_server_will_not_start_gives_way() {
    let d = healthy_leader().server(Server::Stopped).with(|o| o.start_overdue = true).decide();
    assert_eq!(d, Decision::new(Action::ReleaseLease, Reason::CannotStart));
    let d = Scenario::new()
        .me(1)
        .data(DataDir::Primary { system_id: SYSTEM })
        .last_leader(1)
        .with(|o| o.start_overdue = true)
        .decide();
    assert_eq!(d, Decision::wait(Reason::NotACandidate(Some(m(1)))), "it does not take the lease back");
}

#[test]
fn in_synchronous_mode_only_a_recorded_replica_may_take_over() {
    let outside = leader_lost(0x3000100).with(sync_mode(SyncMode::On)).with(sync_record(&[3], 1));
    assert_eq!(outside.decide(), Decision::wait(Reason::NotSynchronous(Some(m(1)))));
    let inside = leader_lost(0x3000000).with(sync_mode(SyncMode::On)).with(sync_record(&[2], 1)).with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x3000100));
    });
    assert_eq!(
        inside.decide().action,
        Action::AcquireLease,
        "node-3 is ahead but holds no acknowledged commit node-2 lacks"
    );
    let unrecorded = leader_lost(0x3000000).with(sync_mode(SyncMode::On));
    assert_eq!(unrecorded.decide(), Decision::wait(Reason::NotSynchronous(Some(m(1)))));
}

#[test]
fn in_quorum_mode_the_winner_needs_reports_from_enough_members() {
    let alone = leader_lost(0x3000000).with(sync_mode(SyncMode::Quorum)).with(sync_record(&[2, 3], 1));
    assert_eq!(alone.decide(), Decision::wait(Reason::TooFewReports { reported: 1, needed: 2 }));
    let both = alone.with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x2000000));
    });
    assert_eq!(both.decide().action, Action::AcquireLease);
    let nobody = leader_lost(0x3000000).with(sync_mode(SyncMode::Quorum)).with(sync_record(&[2, 3], 0)).with(|o| {
        o.cluster.members.insert(m(3), reported(3, 0x2000000));
    });
    assert_eq!(nobody.decide(), Decision::wait(Reason::TooFewReports { reported: 2, needed: 3 }));
}

#[test]
fn a_synchronous_primary_waits_for_a_streaming_replica() {
    let row = |n: u32| ReplicationRow {
        application_name: m(n).to_string(),
        client_addr: None,
        state: "streaming".into(),
        flush_lsn: None,
        replay_lsn: None,
        replay_lag_ms: None,
        sync_state: None,
    };
    let s = healthy_leader().with(sync_mode(SyncMode::On)).with(|o| o.replication = vec![row(3), row(2)]);
    let want = SyncRecord { leader: Some(m(1)), members: [m(2)].into(), quorum: 1 };
    let d = s.decide();
    assert_eq!(d.action, Action::ApplySpec(SpecWork { sync: Some(want.clone()), ..SpecWork::default() }));
    assert_eq!(d.to_string(), "applying the spec: wait for synchronous replica(s) FIRST 1 (\"node-2\")");
    let done = s.with(|o| {
        o.cluster.sync = Some(want);
        o.standby_names = Some("FIRST 1 (\"node-2\")".into());
    });
    assert_eq!(done.decide().action, Action::RenewLease);
    let quorum = healthy_leader().with(sync_mode(SyncMode::Quorum)).with(|o| o.replication = vec![row(2), row(3)]);
    let Action::ApplySpec(work) = quorum.decide().action else { panic!("expected sync work") };
    assert_eq!(work.sync.unwrap().members, [m(2), m(3)].into());
}

#[test]
fn a_synchronous_replica_that_stops_streaming_is_replaced() {
    let row = ReplicationRow {
        application_name: "node-3".into(),
        client_addr: None,
        state: "streaming".into(),
        flush_lsn: None,
        replay_lsn: None,
        replay_lag_ms: None,
        sync_state: None,
    };
    let s = healthy_leader().with(sync_mode(SyncMode::On)).with(sync_record(&[2], 1)).with(|o| {
        o.replication = vec![row];
        o.standby_names = Some("FIRST 1 (\"node-2\")".into());
    });
    let Action::ApplySpec(work) = s.decide().action else { panic!("expected sync work") };
    assert_eq!(work.sync.unwrap().members, [m(3)].into());
}

#[test]
fn a_synchronous_replica_owed_a_restart_gives_its_role_to_another_streaming_one() {
    let row = |n: u32| ReplicationRow {
        application_name: format!("node-{n}"),
        client_addr: None,
        state: "streaming".into(),
        flush_lsn: None,
        replay_lsn: None,
        replay_lag_ms: None,
        sync_state: None,
    };
    let asked = |o: &mut Observation| {
        o.cluster.restarts.insert(m(2), pgrepl_core::restart::RestartRequest { id: 2000 });
    };
    let both = || {
        healthy_leader().with(sync_mode(SyncMode::On)).with(sync_record(&[2], 1)).with(|o| {
            o.replication = vec![row(2), row(3)];
            o.standby_names = Some("FIRST 1 (\"node-2\")".into());
        })
    };
    let Action::ApplySpec(work) = both().with(asked).decide().action else { panic!("expected sync work") };
    assert_eq!(work.sync.unwrap().members, [m(3)].into(), "node-3 takes the role from node-2, owed a restart");
    assert_eq!(both().decide().action, Action::RenewLease, "asked nothing, node-2 keeps it");
    // With nobody else streaming, the owing one keeps the role (better than none).
    let alone = healthy_leader().with(sync_mode(SyncMode::On)).with(sync_record(&[2], 1)).with(|o| {
        o.replication = vec![row(2)];
        o.standby_names = Some("FIRST 1 (\"node-2\")".into());
    });
    assert_eq!(alone.with(asked).decide().action, Action::RenewLease);
}

#[test]
fn a_promotion_in_synchronous_mode_first_claims_the_sync_record() {
    let d = Scenario::new().leader(2).server(replica_of(Some(1), true)).with(sync_mode(SyncMode::On)).decide();
    assert_eq!(d.action, Action::Promote { create_slots: vec!["node_1".into(), "node_3".into()], claim_sync: true });
}

#[test]
fn a_forced_target_gets_the_lease_even_when_not_streaming() {
    let d = healthy_leader().target(2).decide();
    assert_eq!(d.action, Action::RenewLease, "a planned switchover waits for the target to stream");
    let d = healthy_leader().target(2).with(|o| o.cluster.force_target = true).decide();
    assert_eq!(d, Decision::new(Action::Demote { release_lease: true }, Reason::HandOver(m(2))));
}

// ---- timeline forks: a replica that replayed past the point where the leader's timeline began ----

/// Where `node-2`'s timeline 2 left timeline 1 in the fault run of issue 15.
const SWITCH: u64 = 0x5020688;

/// A replica at `replay_lsn` on `replay_timeline` that knows of timeline 2 (it fetched the
/// history file while trying to follow), pointed at `upstream`, not streaming.
fn replica_on(replay_timeline: u32, replay_lsn: u64, upstream: u32) -> Server {
    Server::Replica {
        timeline: Timeline(2),
        receive_lsn: Lsn(replay_lsn),
        replay_lsn: Lsn(replay_lsn),
        replay_timeline: Some(Timeline(replay_timeline)),
        upstream: Some(Upstream { host: "127.0.0.1".into(), port: port(upstream) }),
        streaming: false,
    }
}

/// `node-2` leads on timeline 2, which left timeline 1 at `SWITCH`; seen from `node-3`.
fn after_promotion_of_node_2() -> Scenario {
    Scenario::new().me(3).ready_leader(2).with(|o| {
        let leader = o.cluster.members.get_mut(&m(2)).unwrap();
        leader.timeline = Some(Timeline(2));
        leader.lsn = Some(Lsn(0x5030000));
        leader.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH) }]);
    })
}

#[test]
fn a_replica_that_replayed_past_the_leaders_switch_point_is_rewound_at_once() {
    // The fault of issue 15: node-3 replayed timeline 1 to 0/50206F8, node-2 promoted at
    // 0/5020688. Timeline numbers alone (2 and 2) looked fine; the switch point does not.
    let d = after_promotion_of_node_2().server(replica_on(1, 0x50206F8, 2)).decide();
    assert_eq!(d.action, Action::Rewind { leader: m(2) }, "without waiting for the stall bound");
    assert!(d.reason.is_warning());
    assert_eq!(
        d.to_string(),
        "rewinding: this replica's WAL forked from node-2's timeline: it replayed timeline 1 up to 0/50206F8, \
         past 0/5020688 where timeline 2 forked from it, so it can never stream from node-2 as it is"
    );
    let quiet = after_promotion_of_node_2()
        .server(replica_on(1, 0x50206F8, 2))
        .with(|o| o.replica_not_streaming_long = Some(QUIET))
        .decide();
    assert_eq!(quiet.action, Action::Rewind { leader: m(2) }, "forked: a restart would not help");
    let still_pointed_at_the_old_leader = after_promotion_of_node_2().server(replica_on(1, 0x50206F8, 1)).decide();
    assert_eq!(still_pointed_at_the_old_leader.action, Action::Rewind { leader: m(2) }, "no follow to try first");
}

#[test]
fn a_replica_at_or_behind_the_switch_point_follows_the_new_timeline() {
    let at = after_promotion_of_node_2().server(replica_on(1, SWITCH, 2)).decide();
    assert_eq!(at, Decision::new(Action::Nothing, Reason::CatchingUp(m(2))));
    let behind = after_promotion_of_node_2().server(replica_on(1, 0x5000000, 1)).decide();
    assert_eq!(behind, Decision::new(Action::Follow { leader: m(2) }, Reason::NewUpstream(m(2))));
    let on_it = after_promotion_of_node_2().server(replica_on(2, 0x5030000, 2)).decide();
    assert_eq!(on_it.action, Action::Nothing);
    assert!(!on_it.reason.is_warning());
}

#[test]
fn a_replica_on_a_timeline_outside_the_leaders_line_is_rewound() {
    // Timeline 3 branched off somewhere else (a forced failover to a lagging member, say).
    let d = after_promotion_of_node_2().server(replica_on(3, 0x5010000, 2)).decide();
    assert_eq!(d.action, Action::Rewind { leader: m(2) });
    assert!(d.to_string().contains("never passed through timeline 3"), "{d}");
}

#[test]
fn without_the_leaders_history_or_the_replicas_replay_timeline_no_fork_is_claimed() {
    let no_history = after_promotion_of_node_2()
        .server(replica_on(1, 0x50206F8, 2))
        .with(|o| o.cluster.members.get_mut(&m(2)).unwrap().history = None);
    assert_eq!(no_history.decide(), Decision::new(Action::Nothing, Reason::CatchingUp(m(2))));
    let mut unknown = replica_on(1, 0x50206F8, 2);
    if let Server::Replica { replay_timeline, .. } = &mut unknown {
        *replay_timeline = None;
    }
    let d = after_promotion_of_node_2().server(unknown).decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::CatchingUp(m(2))), "a guess is no proof");
    let leader_not_running = Scenario::new().me(3).leader(2).server(replica_on(1, 0x50206F8, 2)).decide();
    assert_eq!(leader_not_running, Decision::new(Action::Nothing, Reason::CatchingUp(m(2))), "nothing published");
}

#[test]
fn a_leader_records_its_timeline_history_with_itself_as_the_last_leader() {
    let history = vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH) }];
    let d = healthy_leader().with(|o| o.history = Some(history.clone())).decide();
    assert_eq!(d.action, Action::ApplySpec(SpecWork { record_leader: true, ..SpecWork::default() }));
    let recorded = healthy_leader().with(|o| {
        o.history = Some(history.clone());
        o.cluster.last_leader.as_mut().unwrap().history = Some(history);
    });
    assert_eq!(recorded.decide().action, Action::RenewLease);
}

// ---- the race after a fork: nobody off the lost leader's line takes over ----

/// `node-1` led on timeline 2 (which left timeline 1 at `SWITCH`) and is gone; seen from `node-2`.
fn timeline_2_leader_lost(me: Server) -> Scenario {
    Scenario::new().server(me).with(|o| {
        o.cluster.last_leader = Some(LeaderRecord {
            member: m(1),
            timeline: Some(Timeline(2)),
            history: Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH) }]),
        })
    })
}

/// A peer's report after the lease fell free: replayed `replay_timeline` to `lsn`, knows of timeline 2.
fn reported_on(n: u32, replay_timeline: u32, lsn: u64) -> MemberStatus {
    MemberStatus { timeline: Some(Timeline(2)), replay_timeline: Some(Timeline(replay_timeline)), ..reported(n, lsn) }
}

#[test]
fn a_replica_off_the_lost_leaders_line_may_not_take_over_even_when_furthest_along() {
    let s = timeline_2_leader_lost(replica_on(1, 0x5030000, 1)).with(|o| {
        o.cluster.members.insert(m(3), reported_on(3, 2, 0x5021000));
    });
    let d = s.decide();
    assert_eq!(d.action, Action::Wait);
    assert!(matches!(d.reason, Reason::ForkedFromLostLeader { .. }), "{d:?}");
    assert!(d.to_string().contains("past 0/5020688"), "{d}");
}

#[test]
fn a_forked_peer_further_along_does_not_hold_up_the_race() {
    // node-3 shows timeline 2 (from the history file) and the highest position: by timeline
    // and position it looks ahead, yet its WAL past the switch point is not the leader's.
    let s = timeline_2_leader_lost(replica_on(2, 0x5021000, 1)).with(|o| {
        o.cluster.members.insert(m(3), reported_on(3, 1, 0x5030000));
    });
    assert_eq!(s.decide(), Decision::new(Action::AcquireLease, Reason::FailoverRace(Some(m(1)))));
}

#[test]
fn on_the_lost_leaders_line_a_replica_behind_the_switch_point_is_behind_one_past_it() {
    let behind = timeline_2_leader_lost(replica_on(1, SWITCH - 0x100, 1)).with(|o| {
        o.cluster.members.insert(m(3), reported_on(3, 2, SWITCH + 0x100));
    });
    assert_eq!(behind.decide(), Decision::wait(Reason::PeerAhead(m(3))));
    let ahead = timeline_2_leader_lost(replica_on(2, SWITCH + 0x200, 1)).with(|o| {
        o.cluster.members.insert(m(3), reported_on(3, 1, SWITCH - 0x100));
    });
    assert_eq!(ahead.decide().action, Action::AcquireLease);
}

#[test]
fn a_peer_that_received_more_than_it_replayed_is_ahead_by_what_it_received() {
    let s = leader_lost(0x3000100).with(|o| {
        let peer = MemberStatus { receive_lsn: Some(Lsn(0x3000200)), ..reported(3, 0x3000000) };
        o.cluster.members.insert(m(3), peer);
    });
    assert_eq!(s.decide(), Decision::wait(Reason::PeerAhead(m(3))), "promotion replays all it received");
    let mine_received = leader_lost(0x3000000).with(|o| {
        if let Server::Replica { receive_lsn, .. } = &mut o.server {
            *receive_lsn = Lsn(0x3000300);
        }
        o.cluster.members.insert(m(3), reported(3, 0x3000200));
    });
    assert_eq!(mine_received.decide().action, Action::AcquireLease);
}

#[test]
fn a_peer_whose_fork_cannot_be_proven_still_counts() {
    // An agent that does not publish its replay timeline: by timeline, then position.
    let s = timeline_2_leader_lost(replica_on(2, 0x5021000, 1)).with(|o| {
        o.cluster.members.insert(m(3), MemberStatus { timeline: Some(Timeline(2)), ..reported(3, 0x5030000) });
    });
    assert_eq!(s.decide(), Decision::wait(Reason::PeerAhead(m(3))));
}

#[test]
fn a_replica_on_a_newer_timeline_than_the_recorded_last_leader_is_not_taken_for_forked() {
    // node-1 promoted to timeline 3 and was lost before it recorded itself: the record still
    // says timeline 2. A replica that followed timeline 3 must still be able to take over.
    let mut on_3 = replica_on(3, 0x6000000, 1);
    if let Server::Replica { timeline, .. } = &mut on_3 {
        *timeline = Timeline(3);
    }
    let s = timeline_2_leader_lost(on_3).with(|o| {
        o.cluster.members.insert(m(3), MemberStatus { timeline: Some(Timeline(3)), ..reported_on(3, 3, 0x5FFFFFF) });
    });
    assert_eq!(s.decide().action, Action::AcquireLease);
    let behind_a_peer_on_3 = timeline_2_leader_lost(replica_on(2, 0x5021000, 1)).with(|o| {
        o.cluster.members.insert(m(3), MemberStatus { timeline: Some(Timeline(3)), ..reported_on(3, 3, 0x6000000) });
    });
    assert_eq!(behind_a_peer_on_3.decide(), Decision::wait(Reason::PeerAhead(m(3))), "it counts, and is ahead");
}

#[test]
fn a_replica_on_another_branch_with_the_leaders_timeline_number_is_rewound() {
    // A member promoted without having seen timeline 2's history file called its new timeline
    // 2 as well: same number, but its line left timeline 1 elsewhere.
    let own = vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH + 0x1000) }];
    let other_branch = after_promotion_of_node_2().server(replica_on(2, SWITCH + 0x2000, 2)).with(|o| {
        o.history = Some(own);
    });
    let d = other_branch.decide();
    assert_eq!(d.action, Action::Rewind { leader: m(2) });
    assert!(d.to_string().contains("on a line that left timeline 1 at 0/5021688"), "{d}");
    let same_branch = after_promotion_of_node_2().server(replica_on(2, SWITCH + 0x2000, 2)).with(|o| {
        o.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH) }]);
    });
    assert_eq!(same_branch.decide(), Decision::new(Action::Nothing, Reason::CatchingUp(m(2))));
}

#[test]
fn a_peer_on_another_branch_with_the_lost_leaders_timeline_number_does_not_hold_up_the_race() {
    let s = timeline_2_leader_lost(replica_on(2, 0x5021000, 1)).with(|o| {
        o.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(SWITCH) }]);
        let other_branch = vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(0x5000000) }];
        o.cluster.members.insert(m(3), MemberStatus { history: Some(other_branch), ..reported_on(3, 2, 0x5030000) });
    });
    assert_eq!(s.decide().action, Action::AcquireLease);
    let mine_elsewhere = timeline_2_leader_lost(replica_on(2, 0x5030000, 1))
        .with(|o| o.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(0x5000000) }]));
    assert!(matches!(mine_elsewhere.decide().reason, Reason::ForkedFromLostLeader { .. }));
}

#[test]
fn a_paused_forked_replica_is_not_rewound_but_still_warned_of() {
    let d = after_promotion_of_node_2().server(replica_on(1, 0x50206F8, 2)).paused().decide();
    assert_eq!(d, paused(Action::Wait, Reason::NoRewindPaused(m(2))));
    assert!(d.reason.is_warning(), "{d}");
}

/// `pgrepl stop node-N` marks the member stopped in the spec.
fn stopped_in_spec(n: u32) -> impl FnOnce(&mut Observation) {
    move |o| o.cluster.spec.as_mut().unwrap().members.get_mut(&m(n)).unwrap().stopped = true
}

#[test]
fn a_leader_stopped_by_request_stops_its_primary_and_gives_the_lease_up() {
    let d = healthy_leader().with(stopped_in_spec(1)).decide();
    assert_eq!(d, Decision::new(Action::StopServer { release_lease: true }, Reason::StopRequested));
    assert_eq!(
        d.to_string(),
        "stopping PostgreSQL and giving up any leader lease: `pgrepl stop` asked for this member to be kept down"
    );
    // Its server already down, it still gives the lease up rather than start again.
    let d = healthy_leader().server(Server::Stopped).with(stopped_in_spec(1)).decide();
    assert_eq!(d, Decision::new(Action::ReleaseLease, Reason::StopRequested));
}

#[test]
fn a_replica_stopped_by_request_stops_and_stays_down() {
    let s = || Scenario::new().server(replica_of(Some(1), true)).ready_leader(1).with(stopped_in_spec(2));
    assert_eq!(s().decide(), Decision::new(Action::StopServer { release_lease: false }, Reason::StopRequested));
    let d = s().server(Server::Stopped).decide();
    assert_eq!(d, Decision::new(Action::Nothing, Reason::KeptStopped));
    assert_eq!(d.to_string(), "stopped, as `pgrepl stop` asked; `pgrepl start` runs it again");
    // `pgrepl start` clears the mark: the next cycle starts it as a replica again.
    let d = s()
        .server(Server::Stopped)
        .with(|o| o.cluster.spec.as_mut().unwrap().members.get_mut(&m(2)).unwrap().stopped = false)
        .decide();
    assert_eq!(d.action, Action::StartAsReplica { leader: Some(m(1)) });
}

/// Every situation a member kept stopped may observe: whatever its server, data, the lease,
/// a promote request, the last leader, maintenance mode or its first cycle, it never starts,
/// promotes, takes the lease, clones, rewinds or wipes anything, and it gives the lease up
/// whenever it holds it.
#[test]
fn a_member_kept_stopped_never_starts_leads_or_touches_its_data() {
    let servers = [primary(), replica_of(Some(1), true), replica_of(Some(3), false), Server::Stopped];
    let datas = [DataDir::Primary { system_id: SYSTEM }, DataDir::Standby { system_id: SYSTEM }, DataDir::Missing];
    let mut seen = 0;
    for server in &servers {
        for data in &datas {
            for leader in [None, Some(1), Some(2), Some(3)] {
                for target in [None, Some(2), Some(3)] {
                    for (paused, first_cycle, last) in
                        [(false, false, 1), (true, false, 2), (false, true, 2), (true, true, 3)]
                    {
                        let mut s = Scenario::new()
                            .server(server.clone())
                            .data(data.clone())
                            .last_leader(last)
                            .with(stopped_in_spec(2))
                            .with(|o| {
                                o.first_cycle = first_cycle;
                                o.destroy_on_restart = true;
                            });
                        if let Some(l) = leader {
                            s = if l == 2 { s.leader(2) } else { s.ready_leader(l) };
                        }
                        if let Some(t) = target {
                            s = s.target(t);
                        }
                        if paused {
                            s = s.paused();
                        }
                        let d = s.decide();
                        let holds = leader == Some(2);
                        let allowed = match &d.action {
                            Action::StopServer { release_lease } => {
                                *release_lease == holds && *server != Server::Stopped
                            }
                            Action::ReleaseLease => holds && *server == Server::Stopped,
                            Action::Nothing => !holds && *server == Server::Stopped,
                            _ => false,
                        };
                        assert!(
                            allowed,
                            "{server:?} {data:?} leader {leader:?} target {target:?} paused {paused}: {d:?}"
                        );
                        seen += 1;
                    }
                }
            }
        }
    }
    assert_eq!(seen, 4 * 3 * 4 * 3 * 4);
}
