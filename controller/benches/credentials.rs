//! Load generator for finding a call's credential: N credentials in the
//! store's table, then lookups of tokens (a third of them nobody's), by the
//! table's hash index against the linear scan it replaced (every
//! credential's hash compared in constant time), in one run.
//!
//! `cargo bench -p controller --bench credentials -- [N]` (default 65,536,
//! the store's limit). Prints lookups per second and time per lookup.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a load generator

use std::time::Instant;

use nemo_controller::store::credentials::{token_sha256, Credential, CredentialTable, Principal};

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(65_536, |n| n.parse().unwrap());
    let mut table = CredentialTable::default();
    for n in 0..total {
        table.insert(Credential {
            id: format!("cred-{n:016x}"),
            principal: Principal::Operator,
            issued_unix_ms: 0,
            token_sha256: token_sha256(&format!("token-{n}")),
        });
    }
    // Tokens as calls present them: two of three someone's, one nobody's.
    let tokens: Vec<String> = (0..3_000)
        .map(|n| {
            format!(
                "token-{}",
                if n % 3 == 2 { total + n } else { n * 7 % total }
            )
        })
        .collect();
    let time = |name: &str, rounds: usize, find: &dyn Fn(&str) -> Option<String>| {
        let start = Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            for token in &tokens {
                found += usize::from(find(&token_sha256(token)).is_some());
            }
        }
        let lookups = rounds * tokens.len();
        let elapsed = start.elapsed();
        println!(
            "{name}: {:.0} lookups/s, {:.2} us each ({found} of {lookups} found), {total} credentials",
            lookups as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / lookups as f64
        );
    };
    time("hash index (now)", 100, &|hash| {
        table.by_token_hash(hash).map(|c| c.id.clone())
    });
    time("linear scan (before)", 1, &|hash| {
        table
            .values()
            .find(|c| nemo_daemon::secret::same_secret(c.token_sha256.as_bytes(), hash.as_bytes()))
            .map(|c| c.id.clone())
    });
}
