//! `roll`: a rolling-upgrade controller for fleets of hosts that live on a RabbitMQ broker.
//!
//! The layers, from the outside in:
//! - [`cli`]: the command line, turned into calls of [`commands`];
//! - [`commands`]: one module per command;
//! - [`session`]: what the commands that change a group share: the password, the management
//!   API, the group's lock and the SSH connections, opened lock-first and closed together;
//! - [`render`]: what people see: plans, run summaries, progress (and the JSON reports);
//! - [`survey`]: the group as it is now, read-only: the broker's queues, bindings and
//!   clients, the queues each host uses, the probe, each host's service state and version;
//! - [`inventory`]: the fleet (groups, halves, hosts, brokers);
//! - [`playbook`]: a release (commands, files, queue ownership and target settings);
//! - [`plan`]: pure computations of what would change (the queue diff);
//! - [`broker`]: RabbitMQ's management API and AMQP;
//! - [`remote`]: the hosts, over SSH;
//! - [`engine`]: executes an approved plan, step by step, journaled and resumable;
//! - [`journal`]: the append-only record of every run, its plan and its backups;
//! - [`history`]: what each run of a group did, read back from its journal;
//! - [`lock`] and [`freeze`]: the group's lock and its change freeze, held on its broker;
//! - [`output`]: tables and JSON;
//! - [`terminal`]: stderr: live progress, plain lines or quiet, and every line printed above
//!   the live display;
//! - [`redact`]: every password masked, in every form, in all that roll writes;
//! - [`failpoint`]: pauses at chosen stages, for the fault tests;
//! - [`exit`] and [`error`]: exit codes and the errors that decide them.

pub mod broker;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod engine;
pub mod error;
pub mod exit;
pub mod failpoint;
pub mod freeze;
pub mod hash;
pub mod history;
pub mod inventory;
pub mod journal;
pub mod lock;
pub mod output;
pub mod plan;
pub mod playbook;
pub mod redact;
pub mod remote;
pub mod render;
pub mod session;
pub mod source;
pub mod step;
pub mod survey;
pub mod template;
pub mod terminal;
pub mod undo;
pub mod units;
