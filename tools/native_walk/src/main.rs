//! native-walk: the "library's own whole-process walk" of a `StableBTreeMap<u64, u64>`, as
//! the bench's native reference (issue 13, target 2).
//!
//! Exactly: read the file into a `VectorMemory` (`Rc<RefCell<Vec<u8>>>`), `BTreeMap::init` on it (or
//! on MemoryId N of a `MemoryManager` over it), iterate every entry decoding key and value, count.
//! It prints one JSON line: the count and a cheap checksum of the keys and values (so the decoding
//! cannot be optimised away). `--sha256` adds the fixtures' entries digest (per entry in key order:
//! u32 BE len(key), key, u32 BE len(value), value, as `Storable::to_bytes` gives them); it costs time,
//! so the bench times the walk without it.
//!
//! Usage: native-walk FILE [--memory raw|ID] [--sha256]

use ic_stable_structures::memory_manager::{MemoryId, MemoryManager};
use ic_stable_structures::{BTreeMap, Memory, Storable, VectorMemory};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

const WASM_PAGE: usize = 65536;
// The crate version build.sh read from the source it built against.
const LIBRARY: &str = match option_env!("NATIVE_WALK_CRATE_VERSION") {
    Some(v) => v,
    None => "unknown",
};
const MAP_MAGIC: &[u8; 3] = b"BTR";

struct Walk {
    count: u64,
    key_sum: u64,
    value_mix: u64,
    sha256: Option<[u8; 32]>,
}

fn walk<M: Memory>(memory: M, digest: bool) -> Result<Walk, String> {
    // BTreeMap::init would quietly create an empty map over anything else: refuse instead.
    let mut magic = [0u8; 3];
    if memory.size() == 0 {
        return Err("the memory is empty".into());
    }
    memory.read(0, &mut magic);
    if &magic != MAP_MAGIC {
        return Err(format!("no BTreeMap here (magic {magic:02x?})"));
    }
    let map: BTreeMap<u64, u64, M> = BTreeMap::init(memory);
    let mut w = Walk {
        count: 0,
        key_sum: 0,
        value_mix: 0,
        sha256: None,
    };
    let mut hasher = if digest { Some(Sha256::new()) } else { None };
    for entry in map.iter() {
        let (k, v) = entry.into_pair();
        w.count += 1;
        w.key_sum = w.key_sum.wrapping_add(k);
        w.value_mix = w.value_mix.rotate_left(5) ^ v;
        if let Some(h) = hasher.as_mut() {
            for bytes in [k.to_bytes(), v.to_bytes()] {
                h.update(&(bytes.len() as u32).to_be_bytes());
                h.update(&bytes);
            }
        }
    }
    if w.count != map.len() {
        return Err(format!(
            "iterated {} entries, the header says {}",
            w.count,
            map.len()
        ));
    }
    w.sha256 = hasher.map(Sha256::finish);
    Ok(w)
}

fn run(args: &[String]) -> Result<Walk, String> {
    let usage = "usage: native-walk FILE [--memory raw|ID] [--sha256]";
    let mut file: Option<&str> = None;
    let mut memory_id: Option<u8> = None;
    let mut digest = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sha256" => digest = true,
            "--memory" => {
                let v = it.next().ok_or(usage)?;
                memory_id = match v.as_str() {
                    "raw" => None,
                    n => Some(
                        n.parse()
                            .map_err(|_| format!("--memory {n}: raw or 0-254"))?,
                    ),
                };
            }
            f if file.is_none() && !f.starts_with("--") => file = Some(f),
            _ => return Err(usage.into()),
        }
    }
    let path = file.ok_or(usage)?;
    let mut bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    // A snapshot is whole Wasm pages; pad a cut file so the memory's size covers every byte.
    bytes.resize(bytes.len().div_ceil(WASM_PAGE) * WASM_PAGE, 0);
    let memory: VectorMemory = Rc::new(RefCell::new(bytes));
    match memory_id {
        None => walk(memory, digest),
        Some(id) => walk(MemoryManager::init(memory).get(MemoryId::new(id)), digest),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(w) => {
            let sha = match w.sha256 {
                Some(d) => format!(
                    ",\"entries_sha256\":\"{}\"",
                    d.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
                None => String::new(),
            };
            println!(
                "{{\"library\":\"ic-stable-structures {}\",\"count\":{},\"key_sum\":{},\"value_mix\":{}{}}}",
                LIBRARY, w.count, w.key_sum, w.value_mix, sha
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("native-walk: {e}");
            ExitCode::from(2)
        }
    }
}

/// SHA-256 (FIPS 180-4), written out so the harness needs no crate beyond the one it measures.
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    used: usize,
    length: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Self {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            used: 0,
            length: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        while !data.is_empty() {
            let n = (64 - self.used).min(data.len());
            self.block[self.used..self.used + n].copy_from_slice(&data[..n]);
            self.used += n;
            data = &data[n..];
            if self.used == 64 {
                self.compress();
                self.used = 0;
            }
        }
    }

    fn compress(&mut self) {
        let mut w = [0u32; 64];
        for (i, c) in self.block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (s, x) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(x);
        }
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.used != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }
}
