//! `pg-orphan`: starts a PostgreSQL server of the test kit (`Postgres::start`), prints
//! `data DIR` (its cluster's folder) and `pid PID` (its postmaster), then waits until its
//! standard input closes, when it stops the server. The PostgreSQL test kills it first, as
//! a test process killed mid-run would be, to see the next start end the orphaned server.

use std::io::Read;

use duologue_testkit::postgres::Postgres;

fn main() {
    let server = Postgres::start().expect("start PostgreSQL");
    println!("data {}", server.data_dir().display());
    println!("pid {}", server.pid());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
