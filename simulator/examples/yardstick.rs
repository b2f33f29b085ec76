//! A yardstick for `macula-sim run`'s events per second: what this machine does to a loop whose
//! work per event stays the same while the state it works on grows.
//!
//! The engine hands each event to a node the mesh picked, and reads and writes the first lines
//! of that node's 4 KiB page (13 of them at 100,000 nodes: the engine's bookkeeping and the
//! node's hot fields). At 1,000 nodes all pages sit in the cache and the TLB; at 100,000 they
//! are 400 MB. This program keeps only that: one 4 KiB page per node, and per event a node
//! drawn at random whose first `--lines` lines are read and written, then `--work` rounds of
//! arithmetic (the default, 190, takes about as long as a `connect` event at 1,000 nodes on the
//! machine it was written on: some 2,300 instructions against the engine's 2,000). With
//! `--ahead N` (default 8; 0 turns it off) it prefetches the lines of the node N events ahead,
//! as the engine does. Large runs of `macula-sim` get transparent huge pages; so does this.
//!
//! It prints one JSON object per line and size: the best and median events per second over
//! `--reps` runs (sizes interleaved), and each best as a ratio of the first size's. If the
//! simulator's ratios are close to these, what is left of its slowdown is the machine's.
//!
//! ```text
//! cargo run --release -p macula-sim --example yardstick -- --nodes 1000,10000,100000
//! ```

use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

/// A cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// A node's page.
#[repr(C, align(4096))]
struct Page([Line; 64]);

/// xorshift64*: the draws need not be good, only cheap and the same every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Multiply-shift: uniform enough, and no division.
        ((u128::from(x >> 32) * n as u128) >> 32) as usize
    }
}

struct Args {
    nodes: Vec<usize>,
    events: u64,
    lines: usize,
    work: u32,
    ahead: usize,
    reps: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        nodes: vec![1_000, 10_000, 100_000],
        events: 20_000_000,
        lines: 13,
        work: 190,
        ahead: 8,
        reps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--nodes" => {
                args.nodes = value
                    .split(',')
                    .map(|v| v.parse().map_err(bad))
                    .collect::<Result<_, _>>()?;
            }
            "--events" => args.events = value.parse().map_err(bad)?,
            "--lines" => args.lines = value.parse().map_err(bad)?,
            "--work" => args.work = value.parse().map_err(bad)?,
            "--ahead" => args.ahead = value.parse().map_err(bad)?,
            "--reps" => args.reps = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.nodes.is_empty() || args.nodes.contains(&0) || args.nodes.iter().any(|&n| n > 1 << 20) {
        return Err("--nodes: sizes between 1 and 1048576".into());
    }
    if args.lines == 0 || args.lines > 64 {
        return Err("--lines: between 1 and 64".into());
    }
    if args.ahead > 1 << 12 || args.reps == 0 || args.events == 0 {
        return Err("--ahead at most 4096; --reps and --events at least 1".into());
    }
    Ok(args)
}

/// Events per second of one run over `nodes` pages, and the bytes of huge pages it had.
fn rate(args: &Args, nodes: usize, seed: u64) -> (f64, u64) {
    let mut pages: Vec<Page> = (0..nodes)
        .map(|i| Page([Line([i as u64; 8]); 64]))
        .collect();
    let mut rng = Rng(seed | 1);
    // The nodes of the next `ring.len()` events, the first one at `i % ring.len()`.
    let mut ring: Vec<usize> = (0..args.ahead.max(1)).map(|_| rng.below(nodes)).collect();
    let mut acc = [1u64, 2, 3, 4];
    let start = Instant::now();
    for i in 0..args.events {
        let at = (i % ring.len() as u64) as usize;
        let page = &mut pages[ring[at]].0;
        for (k, line) in page[..args.lines].iter_mut().enumerate() {
            acc[k & 3] = acc[k & 3].wrapping_add(line.0[0]);
            line.0[1] = line.0[1].wrapping_add(acc[(k + 1) & 3]);
        }
        for _ in 0..args.work {
            for (lane, a) in acc.iter_mut().enumerate() {
                *a = a
                    .rotate_left(7 + lane as u32)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ i;
            }
        }
        let next = rng.below(nodes);
        ring[at] = next;
        if args.ahead > 0 {
            let ahead = &pages[next].0;
            for k in 0..args.lines {
                prefetch_index::prefetch_index(ahead, k);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (
        args.events as f64 / secs,
        macula_sim::memory::anon_huge_bytes(),
    )
}

fn main() -> ExitCode {
    if let Some(code) = macula_sim::memory::rerun() {
        return code;
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rates = vec![Vec::new(); args.nodes.len()];
    let mut huge = vec![0; args.nodes.len()];
    for rep in 0..args.reps {
        for (i, &n) in args.nodes.iter().enumerate() {
            let (r, h) = rate(&args, n, 7 + rep as u64);
            rates[i].push(r);
            huge[i] = h;
        }
    }
    let mut first_best = None;
    for ((rates, &n), huge) in rates.iter_mut().zip(&args.nodes).zip(huge) {
        rates.sort_by(f64::total_cmp);
        let best = rates[rates.len() - 1];
        let first = *first_best.get_or_insert(best);
        println!(
            "{}",
            json!({
                "nodes": n,
                "events_per_sec_best": best.round(),
                "events_per_sec_median": rates[rates.len() / 2].round(),
                "ratio_to_first": (best / first * 1000.0).round() / 1000.0,
                "lines": args.lines, "work": args.work, "ahead": args.ahead, "reps": args.reps,
                "anon_huge_bytes": huge,
            })
        );
    }
    ExitCode::SUCCESS
}
