//! The few bpf(2) calls kernel splicing needs, and its one program, written out instruction by
//! instruction: it is about 60 instructions long, and writing them here spares the build a
//! BPF compiler. Layouts and numbers are those of `linux/bpf.h`.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const MAP_CREATE: i32 = 0;
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
const PROG_LOAD: i32 = 5;
const PROG_ATTACH: i32 = 8;

const MAP_RINGBUF: u32 = 27;
const PROG_TYPE_SK_SKB: u32 = 14;
const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;

/// Helper functions the program calls (`enum bpf_func_id`).
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_MAP_UPDATE_ELEM: i32 = 2;
const HELPER_RINGBUF_OUTPUT: i32 = 130;
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

#[repr(C)]
struct GetInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_map_info`, which is all the router asks of a map it is handed.
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

const OBJ_GET_INFO_BY_FD: i32 = 15;

/// What a map's descriptor says of it: type, key and value size, and entries.
fn map_info(fd: &OwnedFd) -> io::Result<MapInfo> {
    let mut info = MapInfo::default();
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as u64,
    };
    bpf(OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// Plain data that a map holds as it lies in memory: any bit pattern of its size is a value.
///
/// # Safety
/// The type must have no padding, no pointers and no invalid bit patterns.
pub(super) unsafe trait Plain: Copy + Default {}
// SAFETY: integers are plain data.
unsafe impl Plain for u32 {}
// SAFETY: integers are plain data.
unsafe impl Plain for u64 {}

/// The kinds of key-value map the router makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash = 1,
    /// `BPF_MAP_TYPE_SOCKHASH`: values are sockets, stored by descriptor (a u32).
    SockHash = 18,
}

/// A BPF map from `K` to `V`: its key and value sizes are those of `K` and `V`, checked when the
/// map is made or taken over, so a call site passes typed values, never bytes.
pub(super) struct Map<K: Plain, V: Plain> {
    fd: OwnedFd,
    _types: PhantomData<fn(K) -> V>,
}

impl<K: Plain, V: Plain> Map<K, V> {
    const KEY_SIZE: u32 = std::mem::size_of::<K>() as u32;
    const VALUE_SIZE: u32 = std::mem::size_of::<V>() as u32;

    pub(super) fn create(kind: Kind, max_entries: u32) -> io::Result<Self> {
        let mut attr =
            MapCreate { map_type: kind as u32, key_size: Self::KEY_SIZE, value_size: Self::VALUE_SIZE, max_entries };
        Ok(Map { fd: owned_fd(bpf(MAP_CREATE, &mut attr)?), _types: PhantomData })
    }

    /// Takes over a map made elsewhere (a parent process), if it is a `kind` map of `K` to `V`.
    pub(super) fn from_fd(fd: OwnedFd, kind: Kind) -> io::Result<Self> {
        let info = map_info(&fd)?;
        if (info.map_type, info.key_size, info.value_size) != (kind as u32, Self::KEY_SIZE, Self::VALUE_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is a map of type {} with {}-byte keys and {}-byte values, not the {kind:?} of {}-byte keys \
                     and {}-byte values it should be",
                    fd.as_raw_fd(),
                    info.map_type,
                    info.key_size,
                    info.value_size,
                    Self::KEY_SIZE,
                    Self::VALUE_SIZE
                ),
            ));
        }
        Ok(Map { fd, _types: PhantomData })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn element(&self, key: &K, value: u64) -> Element {
        Element { map_fd: self.fd.as_raw_fd() as u32, _pad: 0, key: key as *const K as u64, value, flags: 0 }
    }

    /// Stores `value` (a socket's descriptor in a sockhash) under `key`.
    pub(super) fn insert(&self, key: K, value: V) -> io::Result<()> {
        bpf(MAP_UPDATE_ELEM, &mut self.element(&key, &value as *const V as u64)).map(drop)
    }

    /// The value under `key`, if there is one. (Not for a sockhash, whose values the kernel
    /// gives back as socket cookies, not as the descriptors stored.)
    pub(super) fn get(&self, key: K) -> io::Result<Option<V>> {
        let mut value = V::default();
        match bpf(MAP_LOOKUP_ELEM, &mut self.element(&key, &mut value as *mut V as u64)) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`; a missing key is not an error.
    pub(super) fn remove(&self, key: K) -> io::Result<()> {
        match bpf(MAP_DELETE_ELEM, &mut self.element(&key, 0)) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }
}

/// A BPF ring buffer: the program writes records to it, the router maps it to read them.
pub(super) struct RingBuf {
    fd: OwnedFd,
    /// Bytes of data (a power of two, a multiple of the page size).
    bytes: u32,
}

impl RingBuf {
    pub(super) fn create(bytes: u32) -> io::Result<RingBuf> {
        let mut attr = MapCreate { map_type: MAP_RINGBUF, key_size: 0, value_size: 0, max_entries: bytes };
        Ok(RingBuf { fd: owned_fd(bpf(MAP_CREATE, &mut attr)?), bytes })
    }

    /// Takes over a ring buffer made elsewhere, if it is one; its size is the kernel's word.
    pub(super) fn from_fd(fd: OwnedFd) -> io::Result<RingBuf> {
        let info = map_info(&fd)?;
        if info.map_type != MAP_RINGBUF {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {} is a map of type {}, not a ring buffer", fd.as_raw_fd(), info.map_type),
            ));
        }
        Ok(RingBuf { fd, bytes: info.max_entries })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn bytes(&self) -> u32 {
        self.bytes
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
const R8: u8 = 8;
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
/// dst += src
const fn add_reg(dst: u8, src: u8) -> Insn {
    insn(0x0f, dst, src, 0, 0)
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
/// *(u32 *)(dst + off) = imm
const fn store_imm_u32(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62, dst, 0, off, imm)
}
/// dst = *(u64 *)(src + off)
const fn load_u64(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x79, dst, src, off, 0)
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
/// if dst > src (unsigned): skip `off` instructions
const fn jump_gt_reg(dst: u8, src: u8) -> Insn {
    insn(0x2d, dst, src, 0, 0)
}
/// skip `off` instructions
const fn goto() -> Insn {
    insn(0x05, 0, 0, 0, 0)
}
/// r0 = helper(r1, .., r5)
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// if dst >= src (unsigned): skip `off` instructions
const fn jump_ge_reg(dst: u8, src: u8) -> Insn {
    insn(0x3d, dst, src, 0, 0)
}
/// *(u64 *)(dst + off) = imm (sign-extended)
const fn store_imm_u64(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x7a, dst, 0, off, imm)
}
/// dst = the map (two instructions: a 64-bit load the kernel resolves from the descriptor).
fn load_map(dst: u8, map: RawFd) -> [Insn; 2] {
    const PSEUDO_MAP_FD: u8 = 1;
    [insn(0x18, dst, PSEUDO_MAP_FD, 0, map), insn(0, 0, 0, 0, 0)]
}

/// Jump targets in the verdict program.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Stop,
    Notify,
    Pass,
}

/// A program under construction: instructions, with jumps to labels resolved at the end.
/// Jumps go forward only: the program has no loop, so the verifier walks each path once.
#[derive(Default)]
struct Assembler {
    program: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Assembler {
    fn emit(&mut self, insns: impl IntoIterator<Item = Insn>) {
        self.program.extend(insns);
    }
    /// A conditional or plain jump (its `off` is filled in by `finish`).
    fn jump(&mut self, insn: Insn, to: Label) {
        self.jumps.push((self.program.len(), to));
        self.program.push(insn);
    }
    fn label(&mut self, label: Label) {
        assert!(self.labels.iter().all(|(l, _)| *l != label), "{label:?} is placed twice");
        self.labels.push((label, self.program.len()));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in self.jumps {
            let target = self.labels.iter().find(|(l, _)| *l == to).expect("every label is placed").1;
            assert!(target > at, "a jump to {to:?} goes backwards: the assembler jumps forward only");
            self.program[at].off = i16::try_from(target - at - 1).expect("a jump of at most 32767 instructions");
        }
        self.program
    }
}

/// A socket's cookie: the kernel's number for it, never reused; the key of every map.
pub(super) type Cookie = u64;

/// The maps the verdict program uses, all keyed by the arriving socket's cookie.
pub(super) struct Maps<'a> {
    /// Sockhash: the socket the bytes go out of (stored by descriptor).
    pub partners: &'a Map<Cookie, u32>,
    /// Bytes passed on so far (the program adds to it).
    pub forwarded: &'a Map<Cookie, u64>,
    /// How many bytes in all the kernel may pass on (the router raises it as they are sent).
    pub allowed: &'a Map<Cookie, u64>,
    /// The forwarded count past which the program writes a notice to `stops`, so the router
    /// raises the allowance; the program then sets it to `u64::MAX` until the router sets it.
    pub wake_at: &'a Map<Cookie, u64>,
    /// Present: the router reads this socket itself (the router or the program sets it).
    pub paused: &'a Map<Cookie, u32>,
    /// Ring buffer: the cookie of each socket the program paused or wakes the router for.
    pub stops: &'a RingBuf,
}

/// The verdict program, run by the kernel on every segment that arrives on a spliced socket.
/// Unless the socket is paused, it sends the bytes out of the socket's partner and counts
/// them; but if that would take the count past what the router allowed, it pauses the socket
/// instead and says so in `stops`. When the count passes `wake_at`, it says so in `stops` too
/// (once), for the router to raise the allowance. Bytes of a paused socket, or of one without
/// a partner, stay with it for the router to read, under TCP's flow control. A segment without
/// bytes (a bare FIN) is never passed on: the kernel would take sending nothing for a broken
/// pipe and stop sending on the partner.
///
/// Registers: r1-r5 are a helper's arguments and lost in each call, r0 its result; r6-r9 keep
/// their values across calls, so r6 holds the segment, r7 the pointer to its forwarded count
/// and r8 its allowance. The key (the cookie) lives at r10 - 8 and the paused value at r10 - 16.
/// Every lookup is checked for null before its pointer is used: the verifier refuses the
/// program otherwise, and the router may remove a pair's keys while its segments still pass.
pub(super) fn verdict_program(maps: &Maps) -> Vec<Insn> {
    let mut a = Assembler::default();
    a.emit([mov_reg(R6, R1), load_u32(R1, R6, 0)]); // r6 = the segment; r1 = its length
    a.jump(jump_eq(R1, 0, 0), Label::Pass); // no bytes: a bare FIN
    a.emit([mov_reg(R1, R6), call(HELPER_GET_SOCKET_COOKIE), store_u64(R10, -8, R0)]); // key = its cookie
    a.emit(lookup(maps.paused.fd())); // r0 = &paused[key]
    a.jump(jump_ne(R0, 0, 0), Label::Pass);
    a.emit(lookup(maps.forwarded.fd())); // r0 = &forwarded[key]
    a.jump(jump_eq(R0, 0, 0), Label::Pass); // not a spliced socket
    a.emit([mov_reg(R7, R0)]); // r7 = &forwarded[key]
    a.emit(lookup(maps.allowed.fd())); // r0 = &allowed[key]
    a.jump(jump_eq(R0, 0, 0), Label::Pass);
    a.emit([
        load_u64(R8, R0, 0), // r8 = allowed
        load_u64(R1, R7, 0), // r1 = forwarded so far
        load_u32(R2, R6, 0), // r2 = the segment's length
        add_reg(R1, R2),     // r1 = forwarded with this segment
    ]);
    a.jump(jump_gt_reg(R1, R8), Label::Stop); // past the allowance
    a.emit([mov_reg(R1, R6)]);
    a.emit(load_map(R2, maps.partners.fd()));
    a.emit([mov_reg(R3, R10), add_imm(R3, -8), mov_imm(R4, 0), call(HELPER_SK_REDIRECT_HASH)]); // out of partners[key]
    a.jump(jump_ne(R0, SK_PASS, 0), Label::Pass); // no partner
    a.emit([load_u32(R1, R6, 0), atomic_add_u64(R7, 0, R1)]); // forwarded[key] += length
    a.emit(lookup(maps.wake_at.fd())); // r0 = &wake_at[key]
    a.jump(jump_eq(R0, 0, 0), Label::Pass);
    a.emit([load_u64(R1, R7, 0), load_u64(R2, R0, 0)]); // r1 = forwarded, r2 = wake_at
    a.jump(jump_ge_reg(R2, R1), Label::Pass); // not yet past wake_at
    a.emit([store_imm_u64(R0, 0, -1)]); // wake_at[key] = u64::MAX: one notice until the router sets it
    a.jump(goto(), Label::Notify);
    a.label(Label::Stop);
    a.emit([store_imm_u32(R10, -16, 1)]); // value 1, on the stack
    a.emit(load_map(R1, maps.paused.fd()));
    a.emit([mov_reg(R2, R10), add_imm(R2, -8), mov_reg(R3, R10), add_imm(R3, -16), mov_imm(R4, 0)]);
    a.emit([call(HELPER_MAP_UPDATE_ELEM)]); // paused[key] = 1
    a.label(Label::Notify);
    a.emit(load_map(R1, maps.stops.fd()));
    a.emit([mov_reg(R2, R10), add_imm(R2, -8), mov_imm(R3, 8), mov_imm(R4, 0), call(HELPER_RINGBUF_OUTPUT)]); // stops <- key
    a.label(Label::Pass);
    a.emit([mov_imm(R0, SK_PASS), exit()]);
    a.finish()
}

/// r0 = map_lookup_elem(map, &key) (key at r10 - 8).
fn lookup(map: RawFd) -> Vec<Insn> {
    let mut insns = load_map(R1, map).to_vec();
    insns.extend([mov_reg(R2, R10), add_imm(R2, -8), call(HELPER_MAP_LOOKUP_ELEM)]);
    insns
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
pub(super) fn attach_verdict(program: &[Insn], partners: &Map<Cookie, u32>) -> io::Result<OwnedFd> {
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

    /// The jumps land on their labels: one way to stop (which starts by storing the paused
    /// value), one way to a notice without a stop (after setting `wake_at` to its maximum), and
    /// every other way out ends in the verdict.
    #[test]
    fn jumps_land_on_their_labels() {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let (p, f, al, w, pa) = (
            Map { fd: null(), _types: PhantomData },
            Map { fd: null(), _types: PhantomData },
            Map { fd: null(), _types: PhantomData },
            Map { fd: null(), _types: PhantomData },
            Map { fd: null(), _types: PhantomData },
        );
        let st = RingBuf { fd: null(), bytes: 4096 };
        let maps = Maps { partners: &p, forwarded: &f, allowed: &al, wake_at: &w, paused: &pa, stops: &st };
        let program = verdict_program(&maps);
        let verdict = program.len() - 2;
        assert_eq!(program[verdict], mov_imm(R0, SK_PASS));
        assert_eq!(program[verdict + 1], exit());
        let stop = program.iter().position(|i| *i == store_imm_u32(R10, -16, 1)).unwrap();
        let notify = program.iter().position(|i| *i == call(HELPER_MAP_UPDATE_ELEM)).unwrap() + 1;
        assert_eq!(program[notify], load_map(R1, st.fd())[0], "the notice follows the stop");
        let mut targets = vec![];
        for (at, i) in program.iter().enumerate() {
            if matches!(i.code, 0x05 | 0x15 | 0x55 | 0x2d | 0x3d) {
                assert!(i.off > 0, "instruction {at} jumps backwards or nowhere");
                targets.push((at, at + 1 + i.off as usize));
            }
        }
        assert_eq!(targets.iter().filter(|&&(_, t)| t == stop).count(), 1, "one way to stop");
        let to_notify: Vec<_> = targets.iter().filter(|&&(_, t)| t == notify).collect();
        assert_eq!(to_notify.len(), 1, "one way to a notice alone");
        assert_eq!(program[to_notify[0].0 - 1], store_imm_u64(R0, 0, -1), "a notice alone sets wake_at first");
        assert!(targets.iter().all(|&(_, t)| t == stop || t == notify || t == verdict), "{targets:?}");
        assert_eq!(targets.len(), 9);
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn the_assembler_refuses_a_backward_jump() {
        let mut a = Assembler::default();
        a.label(Label::Pass);
        a.emit([mov_imm(R0, SK_PASS)]);
        a.jump(goto(), Label::Pass);
        a.finish();
    }
}
