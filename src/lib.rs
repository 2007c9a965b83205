//! `roll`: a rolling-upgrade controller for fleets of hosts that live on a RabbitMQ broker.
//!
//! The layers, from the outside in:
//! - [`cli`]: the command line, turned into calls of [`commands`];
//! - [`commands`]: one module per command;
//! - [`inventory`]: the fleet (groups, halves, hosts, brokers);
//! - [`playbook`]: a release (commands, files, queue ownership and target settings);
//! - [`plan`]: pure computations of what would change (the queue diff);
//! - [`broker`]: RabbitMQ's management API and AMQP;
//! - [`remote`]: the hosts, over SSH;
//! - [`engine`]: executes an approved plan, step by step, journaled and resumable;
//! - [`journal`]: the append-only record of every run, its plan and its backups;
//! - [`output`]: tables and JSON;
//! - [`exit`] and [`error`]: exit codes and the errors that decide them.

pub mod broker;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod engine;
pub mod error;
pub mod exit;
pub mod failpoint;
pub mod hash;
pub mod inventory;
pub mod journal;
pub mod lock;
pub mod output;
pub mod plan;
pub mod playbook;
pub mod redact;
pub mod remote;
pub mod report;
pub mod session;
pub mod source;
pub mod template;
pub mod units;
