//! The few bpf(2) calls kernel splicing needs, and its one program, written out instruction by
//! instruction: it is 31 instructions long, and writing them here spares the build a BPF
//! compiler. Layouts and numbers are those of `linux/bpf.h`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const MAP_CREATE: i32 = 0;
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
const PROG_LOAD: i32 = 5;
const PROG_ATTACH: i32 = 8;

pub(super) const MAP_HASH: u32 = 1;
pub(super) const MAP_SOCKHASH: u32 = 18;
const PROG_TYPE_SK_SKB: u32 = 14;
const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;

/// Helper functions the program calls (`enum bpf_func_id`).
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_GET_SOCKET_COOKIE: i32 = 46;
const HELPER_SK_REDIRECT_HASH: i32 = 72;
/// The verdict that lets a segment through (to a redirect, if one was set).
const SK_PASS: i32 = 1;

fn bpf<T>(command: i32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised `#[repr(C)]` prefix of `union bpf_attr`
    // for `command`, and its size is passed with it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

#[repr(C)]
struct Element {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A BPF map keyed by socket cookie (u64).
pub(super) struct Map {
    fd: OwnedFd,
}

impl Map {
    pub(super) fn create(map_type: u32, value_size: u32, max_entries: u32) -> io::Result<Map> {
        let mut attr = MapCreate { map_type, key_size: 8, value_size, max_entries };
        Ok(Map { fd: owned_fd(bpf(MAP_CREATE, &mut attr)?) })
    }

    pub(super) fn from_fd(fd: OwnedFd) -> Map {
        Map { fd }
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn element(&self, key: &u64, value: u64) -> Element {
        Element { map_fd: self.fd.as_raw_fd() as u32, _pad: 0, key: key as *const u64 as u64, value, flags: 0 }
    }

    /// Stores `value` (a socket's descriptor in a sockhash, a plain value otherwise) under `key`.
    pub(super) fn insert<V>(&self, key: u64, value: &V) -> io::Result<()> {
        bpf(MAP_UPDATE_ELEM, &mut self.element(&key, value as *const V as u64)).map(drop)
    }

    pub(super) fn get_u64(&self, key: u64) -> io::Result<Option<u64>> {
        let mut value = 0u64;
        match bpf(MAP_LOOKUP_ELEM, &mut self.element(&key, &mut value as *mut u64 as u64)) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`; a missing key is not an error.
    pub(super) fn remove(&self, key: u64) -> io::Result<()> {
        match bpf(MAP_DELETE_ELEM, &mut self.element(&key, 0)) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }
}

/// One BPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Insn {
    code: u8,
    /// Destination register in the low four bits, source register in the high four.
    regs: u8,
    off: i16,
    imm: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R7: u8 = 7;
/// The frame pointer: the stack lies below it.
const R10: u8 = 10;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}
/// dst = src
const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// dst = imm
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// dst += imm
const fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// *(u64 *)(dst + off) = src
const fn store_u64(dst: u8, off: i16, src: u8) -> Insn {
    insn(0x7b, dst, src, off, 0)
}
/// dst = *(u32 *)(src + off)
const fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
/// lock *(u64 *)(dst + off) += src
const fn atomic_add_u64(dst: u8, off: i16, src: u8) -> Insn {
    insn(0xdb, dst, src, off, 0)
}
/// if dst == imm: skip `skip` instructions
const fn jump_eq(dst: u8, imm: i32, skip: i16) -> Insn {
    insn(0x15, dst, 0, skip, imm)
}
/// if dst != imm: skip `skip` instructions
const fn jump_ne(dst: u8, imm: i32, skip: i16) -> Insn {
    insn(0x55, dst, 0, skip, imm)
}
/// r0 = helper(r1, .., r5)
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// dst = the map (two instructions: a 64-bit load the kernel resolves from the descriptor).
fn load_map(dst: u8, map: &Map) -> [Insn; 2] {
    const PSEUDO_MAP_FD: u8 = 1;
    [insn(0x18, dst, PSEUDO_MAP_FD, 0, map.fd.as_raw_fd()), insn(0, 0, 0, 0, 0)]
}

/// The verdict program, run by the kernel on every segment that arrives on a spliced socket.
/// Unless the socket is in `paused`, it sends the bytes out of the socket stored under the
/// arriving socket's cookie in `partners` and adds their number to the cookie's count in
/// `forwarded`. A paused socket, or one without a partner, keeps its bytes for the router
/// to read. A segment without bytes (a bare FIN) is never passed on: the kernel would take
/// sending nothing for a broken pipe and stop sending on the partner.
pub(super) fn verdict_program(partners: &Map, forwarded: &Map, paused: &Map) -> Vec<Insn> {
    let mut program = vec![
        mov_reg(R6, R1),                // 0: r6 = the segment
        load_u32(R1, R6, 0),            // 1: r1 = its length
        jump_eq(R1, 0, 26),             // 2: no bytes (a bare FIN): to 29
        mov_reg(R1, R6),                // 3
        call(HELPER_GET_SOCKET_COOKIE), // 4: r0 = the arriving socket's cookie
        store_u64(R10, -8, R0),         // 5: key = r0, on the stack
    ];
    program.extend(load_map(R1, paused)); // 6-7
    program.extend([
        mov_reg(R2, R10),             // 8
        add_imm(R2, -8),              // 9: r2 = &key
        call(HELPER_MAP_LOOKUP_ELEM), // 10: r0 = paused[key]
        jump_ne(R0, 0, 17),           // 11: paused: to 29
    ]);
    program.extend(load_map(R1, forwarded)); // 12-13
    program.extend([
        mov_reg(R2, R10),             // 14
        add_imm(R2, -8),              // 15
        call(HELPER_MAP_LOOKUP_ELEM), // 16: r0 = &forwarded[key]
        jump_eq(R0, 0, 11),           // 17: not a spliced socket: to 29
        mov_reg(R7, R0),              // 18: r7 = &forwarded[key]
        mov_reg(R1, R6),              // 19
    ]);
    program.extend(load_map(R2, partners)); // 20-21
    program.extend([
        mov_reg(R3, R10),              // 22
        add_imm(R3, -8),               // 23
        mov_imm(R4, 0),                // 24: egress: out of the partner
        call(HELPER_SK_REDIRECT_HASH), // 25: redirect to partners[key]
        jump_ne(R0, SK_PASS, 2),       // 26: no partner: to 29
        load_u32(R1, R6, 0),           // 27: r1 = the segment's length
        atomic_add_u64(R7, 0, R1),     // 28: forwarded[key] += r1
        mov_imm(R0, SK_PASS),          // 29
        exit(),                        // 30
    ]);
    program
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Loads `program` as a stream verdict program and attaches it to the sockhash `partners`, so
/// the kernel runs it for every socket stored there.
pub(super) fn attach_verdict(program: &[Insn], partners: &Map) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut load = ProgLoad {
        prog_type: PROG_TYPE_SK_SKB,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
    };
    let fd = bpf(PROG_LOAD, &mut load).map(owned_fd).map_err(|e| {
        let verifier = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(log.len())]);
        io::Error::new(e.kind(), format!("load the splice program: {e}; verifier: {}", verifier.trim()))
    })?;
    let mut attach = ProgAttach {
        target_fd: partners.fd.as_raw_fd() as u32,
        attach_bpf_fd: fd.as_raw_fd() as u32,
        attach_type: ATTACH_SK_SKB_STREAM_VERDICT,
        attach_flags: 0,
    };
    bpf(PROG_ATTACH, &mut attach).map_err(|e| io::Error::new(e.kind(), format!("attach the splice program: {e}")))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump of the program lands where its comment says.
    #[test]
    fn jumps_land_on_their_targets() {
        let fake = || Map { fd: std::fs::File::open("/dev/null").unwrap().into() };
        let program = verdict_program(&fake(), &fake(), &fake());
        assert_eq!(program.len(), 31);
        let target = |at: usize| at + 1 + program[at].off as usize;
        for (jump, why) in [(2, "a bare FIN"), (11, "paused"), (17, "not spliced"), (26, "no partner")] {
            assert!(matches!(program[jump].code, 0x15 | 0x55), "{jump} is a conditional jump");
            assert_eq!(target(jump), 29, "{why}: straight to the verdict, uncounted");
        }
        assert_eq!(program[27], load_u32(R1, R6, 0));
        assert_eq!(program[29], mov_imm(R0, SK_PASS));
        assert_eq!(program[30], exit());
    }
}
