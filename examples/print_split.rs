//! Prints the paper's 80/10/10 split that `memprune train --split-seed S` makes of a data
//! set of N points, as JSON: `cargo run --release --example print_split -- N S`.
//! Used by assets/fashion-mnist-planted/make.py to plant points among f's candidates.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [n, seed] = args.as_slice() else {
        anyhow::bail!("usage: print_split N SEED");
    };
    let sp = memprune::train::split::split(n.parse()?, seed.parse()?);
    println!(
        "{}",
        serde_json::json!({
            "shared": sp.shared,
            "candidates": sp.candidates,
            "independent": sp.independent,
        })
    );
    Ok(())
}
