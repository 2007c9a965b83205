//! Integration tests: the `roll` binary against the real lab (RabbitMQ with its management
//! plugin, the lab's sshd hosts, sr3 on them). `tests/run` brings the lab up first.
//!
//! Tests whose name contains `serial_` change the lab and run one at a time
//! (see `.config/nextest.toml`); every other test here only reads.

mod backlog;
mod celery;
mod check;
mod cluster;
mod docs;
mod failover;
mod faults;
mod freeze;
mod inventory_cli;
mod lab;
mod live;
mod mover;
mod queue_diff;
mod quorum;
mod remote;
mod report;
mod rollback;
mod sr3_quorum;
mod support;
mod upgrade;
mod waves;
