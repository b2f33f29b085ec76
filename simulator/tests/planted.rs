//! Planted bugs are caught: for each, a sweep fails within 100 seeds on the invariant the bug
//! breaks, the same seeds pass without it, and the replay command the sweep prints, run as a
//! user would, fails the same way.
#![cfg(feature = "planted-bugs")]

use std::process::Command;

use macula_proto::Duration;
use macula_sim::faults::{Explicit, Profile};
use macula_sim::planted::Plant;
use macula_sim::sweep::{sweep, Recipe};
use macula_sim::Mode;

fn recipe(scenario: &str, profile: Option<Profile>, plant: Plant) -> Recipe {
    Recipe {
        scenario: scenario.into(),
        nodes: 100,
        duration: Duration::from_secs(60),
        mode: Mode::Frames,
        profile,
        explicit: Explicit::default(),
        plant: Some(plant),
    }
}

/// Sweeps `recipe` ten seeds at a time, up to 100, until a seed fails; checks that it fails on
/// `invariant`, passes without the plant, and that its replay command fails.
fn caught(recipe: &Recipe, invariant: &str) {
    let (seed, failures) = (0..10)
        .find_map(|batch| {
            let outcome =
                sweep(recipe, batch * 10..batch * 10 + 10, 2).expect("the scenario exists");
            outcome.failed.into_iter().next()
        })
        .unwrap_or_else(|| panic!("{:?} was not caught within 100 seeds", recipe.plant));
    assert!(
        failures.iter().any(|f| f.invariant == invariant),
        "seed {seed} failed on {failures:?}, not {invariant}"
    );
    let clean = Recipe {
        plant: None,
        ..recipe.clone()
    };
    let outcome = sweep(&clean, seed..seed + 1, 1).expect("the scenario exists");
    assert!(
        outcome.ok(),
        "seed {seed} fails without the plant too: {:?}",
        outcome.failed
    );

    let replay = recipe.replay(seed);
    let args: Vec<&str> = replay.split_whitespace().skip(1).collect();
    let run = Command::new(env!("CARGO_BIN_EXE_macula-sim"))
        .args(&args)
        .output()
        .expect("macula-sim runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{replay}:\n{stdout}");
    assert!(
        stdout.contains(&format!("[FAIL] {invariant}")),
        "{replay}:\n{stdout}"
    );
}

#[test]
fn a_restarted_node_that_forgets_to_rejoin_is_caught() {
    let recipe = recipe("connect", Some(Profile::Churny), Plant::ForgetsRejoin);
    caught(&recipe, "restarted_nodes_rejoin");
}

#[test]
fn a_dht_that_drops_store_acks_is_caught() {
    let recipe = recipe("dht", None, Plant::DropsStoreAcks);
    caught(&recipe, "dht_puts_acked_by_k");
}
