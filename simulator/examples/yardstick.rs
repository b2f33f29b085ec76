//! A yardstick for `macula-sim run`'s events per second: what this machine does to a loop whose
//! work per event stays the same while the state it works on grows.
//!
//! The engine hands each event to a node the mesh picked, and reads and writes the first lines
//! of that node's 4 KiB page (13 of them at 100,000 nodes: the engine's bookkeeping and the
//! node's hot fields). At 1,000 nodes all pages sit in the cache and the TLB; at 100,000 they
//! are 400 MB. This program keeps only that: one 4 KiB page per node, and per event a node
//! drawn at random whose first `--lines` lines are read and written, then `--work` rounds of
//! arithmetic (the default, 160, takes about as long as a `connect` event at 1,000 nodes on the
//! project's machine: 2,300 instructions an event, cachegrind says, against the engine's 2,130
//! in the steady state; it was 190 until the engine lost two stalls in commit `2af98ca`). With
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

use clap::Parser;
use macula_proto::Rng;
use serde_json::json;

/// A cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// A node's page.
#[repr(C, align(4096))]
struct Page([Line; 64]);

/// Events per second of a loop that keeps only `macula-sim run`'s memory pattern (one 4 KiB page
/// per node, a random node per event, fixed work), at several mesh sizes. Compare its ratios with
/// the simulator's: the rest of the simulator's slowdown is its own.
#[derive(Parser)]
#[command(name = "yardstick")]
struct Args {
    /// Mesh sizes to measure, in this order; each ratio is to the first.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000",
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    nodes: Vec<u32>,
    /// Events per run.
    #[arg(long, default_value_t = 20_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Cache lines of its node's page an event reads and writes (the engine's hot prefix is 13).
    #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u8).range(1..=64))]
    lines: u8,
    /// Rounds of arithmetic per event.
    #[arg(long, default_value_t = 160)]
    work: u32,
    /// How many events ahead a node's lines are prefetched; 0 turns prefetching off.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=4096))]
    ahead: u16,
    /// Runs per size; sizes are interleaved.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
}

/// Events per second of one run over `nodes` pages, and the bytes of huge pages it had.
fn rate(args: &Args, nodes: u32, seed: u64) -> (f64, u64) {
    let mut pages: Vec<Page> = (0..nodes)
        .map(|i| Page([Line([u64::from(i); 8]); 64]))
        .collect();
    let mut rng = Rng::from_seed(seed);
    let mut draw = || rng.below(u64::from(nodes)) as usize;
    // The nodes of the next `ring.len()` events, the first one at `i % ring.len()`.
    let mut ring: Vec<usize> = (0..args.ahead.max(1)).map(|_| draw()).collect();
    let lines = usize::from(args.lines);
    let mut acc = [1u64, 2, 3, 4];
    let start = Instant::now();
    for i in 0..args.events {
        let at = (i % ring.len() as u64) as usize;
        let page = &mut pages[ring[at]].0;
        for (k, line) in page[..lines].iter_mut().enumerate() {
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
        let next = draw();
        ring[at] = next;
        if args.ahead > 0 {
            let ahead = &pages[next].0;
            for k in 0..lines {
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
    let args = Args::parse();
    if let Some(code) = macula_sim::memory::rerun() {
        return code;
    }
    let mut rates = vec![Vec::new(); args.nodes.len()];
    let mut huge = vec![0; args.nodes.len()];
    for rep in 0..args.reps {
        for (i, &n) in args.nodes.iter().enumerate() {
            let (r, h) = rate(&args, n, 7 + u64::from(rep));
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
