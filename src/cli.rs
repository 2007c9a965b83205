//! The command line: clap parses it, this module turns it into calls of the commands, and
//! decides the exit code. The commands never see clap.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::error::Error;
use crate::freeze;
use crate::inventory::{self, Half};
use crate::output::OutputFormat;
use crate::plan::rollout::{Asked, PauseAfter};
use crate::playbook::rollout::{Bound, OnFailure};

/// roll: rolling upgrades of fleets of hosts that live on a RabbitMQ broker.
#[derive(Debug, Parser)]
#[command(name = "roll", version, about, long_about = None)]
pub struct Cli {
    /// The inventory file.
    #[arg(
        short = 'i',
        long,
        env = "ROLL_INVENTORY",
        default_value = "inventory/lab.toml",
        global = true
    )]
    pub inventory: PathBuf,

    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,

    /// Where journals are kept (default: $XDG_STATE_HOME/roll, else ~/.local/state/roll).
    #[arg(long, env = "ROLL_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// No live progress on a terminal: plain lines on stderr, one per host and step, as when
    /// stderr is not a terminal or TERM is dumb.
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Only the result (the summary, the table) and errors: no progress, no notes. A plan is
    /// still shown when it is to be approved.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The state directory: the option, else XDG's state home, else ~/.local/state.
pub fn state_dir(option: Option<PathBuf>) -> Result<PathBuf, Error> {
    if let Some(dir) = option {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("roll"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/roll")),
        None => Err(Error::Usage(
            "no state directory: set --state-dir, ROLL_STATE_DIR, XDG_STATE_HOME or HOME".into(),
        )),
    }
}

/// The commands of `roll`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the hosts of the inventory: group, half, role, SSH target and broker.
    ///
    /// Example: roll inventory -i inventory/example.toml --group ops --output json
    #[command(args_conflicts_with_subcommands = true)]
    Inventory {
        #[command(subcommand)]
        action: Option<InventoryAction>,
        /// Only this group.
        #[arg(short, long)]
        group: Option<String>,
        /// Only this half (a or b).
        #[arg(long, value_parser = parse_half)]
        half: Option<Half>,
    },
    /// Check that every host (SSH) and every broker (management API and AMQP) is reachable.
    ///
    /// Exit code 0 when everything is reachable, 1 when anything is not.
    /// Example: roll check --group ops
    Check {
        /// Only this group.
        #[arg(short, long)]
        group: Option<String>,
    },
    /// Show what a release will do to the broker's queues, before anything changes.
    ///
    /// One row per queue of the group's vhost: owner (a host, a half, shared or foreign),
    /// messages, bindings, current and target settings, and a verdict: recreate,
    /// ignored-by-broker, missing, unchanged, outside (the other half) or foreign.
    /// Read-only. Exit code 0 when nothing would change, 2 when changes are pending, 1 on error.
    ///
    /// Example: roll queue-diff -p playbooks/sr3-queue-expire.toml --group ops --half b
    QueueDiff {
        /// The playbook (release) to compare the queues with.
        #[arg(short, long)]
        playbook: PathBuf,
        /// The group whose broker vhost is read.
        #[arg(short, long)]
        group: String,
        /// Only this half is being upgraded (the other half's queues are shown as outside).
        #[arg(long, value_parser = parse_half)]
        half: Option<Half>,
        /// Confirm each verdict with the broker: declare each existing owned queue with the
        /// target settings on a throwaway AMQP channel (a no-op when equivalent, refused with
        /// 406 when not). Never creates a queue.
        #[arg(long)]
        probe: bool,
    },
    /// Upgrade one half of a group, keeping the other half on the old release as the failover.
    ///
    /// Checks first (every host and the broker reachable, the group's lock, no freeze, the
    /// untouched half running, the promotion gate), shows the plan, asks for approval (type the
    /// group name) unless --yes, then executes exactly that plan: canary first, then the rest.
    /// Every step and backup goes to the journal; `roll resume` continues an interrupted run.
    /// Exit codes: 0 done, 3 partial, 1 failed, 2 usage, inventory or playbook error or the
    /// group frozen (`roll freeze`), 4 paused (--pause-after).
    ///
    /// Example: roll upgrade -p playbooks/sr3-minor.toml --group stage --half a
    /// Example: roll upgrade --group ops --half b --waves 1,2,100% --max-failures 1
    /// Example: roll upgrade --group ops --half a   (the release stage completed)
    Upgrade(UpgradeArgs),
    /// Undo the group's last upgrade run from its journal: fail over to the untouched half,
    /// then restore the group as it was.
    ///
    /// Service first: stop the upgraded hosts, restore every recreated queue to its backed-up
    /// definition and bindings, start the old release (swapping an active/passive pair whose
    /// active host was upgraded) and report the failover time. Repairs second: reinstall the
    /// previous version, restore the replaced files, start the hosts again.
    /// Run it again to finish an interrupted rollback. Exit codes: 0 done, 1 failed,
    /// 2 nothing to roll back or a usage error.
    ///
    /// Example: roll rollback --group ops
    Rollback(RollbackArgs),
    /// Continue the group's interrupted or failed run from its journal: the same plan, the
    /// steps already done skipped. Every step is safe to run again.
    ///
    /// Example: roll resume --group ops
    Resume {
        /// The group whose last run to continue.
        #[arg(short, long)]
        group: String,
    },
    /// Freeze a group: `roll upgrade` of it is refused (exit 2) on every controller until
    /// `roll unfreeze` or the freeze's end (--until). Rollback and resume are not refused.
    ///
    /// The freeze is a durable queue `roll.freeze.<group>` on the group's broker recording who
    /// set it, when, why and until when; `roll status` and `roll check` show it. Shows what it
    /// will do and asks for approval (type the group name) unless --yes. Exit codes: 0 frozen,
    /// 2 frozen already (naming the freeze) or a usage error, 1 the broker failed.
    ///
    /// Example: roll freeze --group ops --reason "quarter-end close" --until 2026-12-31T18:00:00Z
    /// Example: roll freeze --group stage --reason "incident 4711" --until 2h
    Freeze(FreezeArgs),
    /// Lift a group's freeze (delete its queue). A group that is not frozen is said so, exit 0.
    ///
    /// Example: roll unfreeze --group ops
    Unfreeze {
        /// The group to unfreeze.
        #[arg(short, long)]
        group: String,
        /// Approve without asking.
        #[arg(long)]
        yes: bool,
        /// Show what would be done and stop: nothing is changed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show, probed live on every host: half, role, installed version, service state, the
    /// last run and step from the journal, and which hosts are the failover (old release).
    ///
    /// Example: roll status --group ops
    Status {
        /// Only this group.
        #[arg(short, long)]
        group: Option<String>,
        /// The playbook whose status and version commands to use (default: the last run's).
        #[arg(short, long)]
        playbook: Option<PathBuf>,
    },
    /// One row per run of a group, newest first, from its journals: id, kind, half, release,
    /// operator, start, duration, status, critical window, queues recreated, messages moved
    /// and lost, failures. Reads no host and no broker.
    ///
    /// Example: roll history --group ops
    /// Example: roll history --group ops --limit 5 --output json
    History {
        /// The group.
        #[arg(short, long)]
        group: String,
        /// Only the newest N runs.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// One run as a self-contained HTML page (no external asset: it opens with no network):
    /// the plan as approved, a timeline with a row per host (each step a bar, stops
    /// highlighted, the critical window shaded), the messages of each queue, the failures
    /// with their output. `--output json` gives the same data.
    ///
    /// Example: roll report 20261206T190811Z-ops-4690 --to run.html
    /// Example: roll report --last --group ops --to last.html
    Report {
        /// The run's id (roll history lists them).
        #[arg(required_unless_present = "last")]
        run: Option<String>,
        /// The group's last run.
        #[arg(long, requires = "group", conflicts_with = "run")]
        last: bool,
        /// The group (needed with --last; narrows the search for a run id).
        #[arg(short, long)]
        group: Option<String>,
        /// Write the page to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Print a shell completion script for roll (bash, zsh, fish, elvish or powershell).
    ///
    /// Reads no inventory. Example: roll completions bash > /etc/bash_completion.d/roll
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print roll's manual page (roff), made from these very options.
    ///
    /// Reads no inventory. Example: roll man > roll.1 && man -l roll.1
    Man,
}

/// What `roll inventory` does besides listing.
#[derive(Debug, Subcommand)]
pub enum InventoryAction {
    /// Write an Ansible inventory (INI or YAML) as roll's TOML, with comments where it had to
    /// guess; what it does not understand is reported with its file and line, and then nothing
    /// is written.
    ///
    /// Hosts' ansible_host, ansible_user, ansible_port, ansible_ssh_private_key_file and the
    /// -o UserKnownHostsFile= of ansible_ssh_common_args become their SSH settings; roll_half,
    /// roll_role, roll_pair, roll_requires and roll_broker_* variables roll's own; passwords
    /// are never carried over. Exit 0: the TOML is an inventory roll accepts; 3: written, to
    /// be completed (said on stderr); 2: not understood, nothing written.
    /// Example: roll inventory import --ansible hosts.ini --half-by var:half --to fleet.toml
    Import {
        /// The Ansible inventory file.
        #[arg(long, value_name = "FILE")]
        ansible: PathBuf,
        /// How hosts go into halves: odd-even, first-half or var:NAME (a host variable, a or
        /// b). Default: roll_half when every host has it, else odd-even (said as a guess).
        #[arg(long, value_name = "RULE")]
        half_by: Option<crate::inventory::ansible::convert::HalfBy>,
        /// The Ansible groups that become roll groups, comma-separated (default: every group
        /// that lists hosts itself).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// Write the TOML to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Replace the --to file when it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `--waves`, parsed (clap needs a type that is not a Vec).
#[derive(Debug, Clone)]
pub struct Waves(Vec<Bound>);

fn parse_waves(s: &str) -> Result<Waves, String> {
    crate::playbook::rollout::parse_waves(s).map(Waves)
}

fn parse_pause_after(s: &str) -> Result<PauseAfter, String> {
    s.parse()
}

fn parse_bound(s: &str) -> Result<Bound, String> {
    s.parse()
}

fn parse_on_failure(s: &str) -> Result<OnFailure, String> {
    s.parse()
}

/// The options of `roll upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The playbook (release) to apply. Without it (and without ROLL_PLAYBOOK), a group that
    /// requires another gets the release that completed on both halves of that group.
    #[arg(short, long, env = "ROLL_PLAYBOOK")]
    playbook: Option<PathBuf>,
    /// The group to upgrade.
    #[arg(short, long)]
    group: String,
    /// The half to upgrade (a or b); the other half is the failover.
    #[arg(long, value_parser = parse_half)]
    half: Half,
    /// Approve the plan without asking.
    #[arg(long)]
    yes: bool,
    /// Print the plan and stop: nothing is changed.
    #[arg(long)]
    dry_run: bool,
    /// Hosts upgraded at the same time within a wave.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// The waves, as cumulative counts or percentages of the half (e.g. 1,25%,100%); hosts
    /// left over make a last wave. Default: the playbook's [rollout] waves, else the canary,
    /// then the rest.
    #[arg(long, value_parser = parse_waves)]
    waves: Option<Waves>,
    /// End the run, paused (exit 4), after the canary or after wave N; `roll resume`
    /// continues with the next wave.
    #[arg(long, value_name = "canary|N", value_parser = parse_pause_after)]
    pause_after: Option<PauseAfter>,
    /// Hosts that may fail after the first wave while the run goes on (N or P% of the
    /// half); default 0: the first failure stops the run.
    #[arg(long, value_name = "N|P%", value_parser = parse_bound)]
    max_failures: Option<Bound>,
    /// After a failure not tolerated: stop where it is (default), or roll the run back at
    /// once (the untouched half first).
    #[arg(long, value_name = "stop|rollback", value_parser = parse_on_failure)]
    on_failure: Option<OnFailure>,
    /// Upgrade even though the required group has not completed this release (recorded).
    #[arg(long)]
    skip_promotion_check: bool,
    /// Delete recreated queues with their messages, as the manual procedure does, instead
    /// of keeping them in holding queues (the loss is counted and reported).
    #[arg(long)]
    allow_message_loss: bool,
}

impl UpgradeArgs {
    /// The command's settings: these options, the state directory and the output format.
    fn settings(self, state_dir: PathBuf, output: OutputFormat) -> commands::upgrade::Settings {
        commands::upgrade::Settings {
            playbook: self.playbook,
            group: self.group,
            half: self.half,
            yes: self.yes,
            dry_run: self.dry_run,
            parallel: self.parallel,
            rollout: Asked {
                waves: self.waves.map(|w| w.0),
                pause_after: self.pause_after,
                max_failures: self.max_failures,
                on_failure: self.on_failure,
            },
            skip_promotion_check: self.skip_promotion_check,
            allow_message_loss: self.allow_message_loss,
            state_dir,
            output,
        }
    }
}

/// The options of `roll freeze`.
#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// The group to freeze.
    #[arg(short, long)]
    group: String,
    /// Why: shown to everyone whose upgrade is refused.
    #[arg(long)]
    reason: String,
    /// When the freeze ends by itself: an RFC 3339 time (2026-12-31T18:00:00Z, or with an
    /// offset such as +01:00) or a duration from now (90m, 2h, 3d). Default: at `roll unfreeze`.
    #[arg(long, value_parser = freeze::parse_until)]
    until: Option<freeze::Until>,
    /// Approve without asking.
    #[arg(long)]
    yes: bool,
    /// Show what would be done and stop: nothing is changed.
    #[arg(long)]
    dry_run: bool,
}

impl FreezeArgs {
    fn settings(self, output: OutputFormat) -> commands::freeze::FreezeSettings {
        commands::freeze::FreezeSettings {
            group: self.group,
            reason: self.reason,
            until: self.until,
            yes: self.yes,
            dry_run: self.dry_run,
            output,
        }
    }
}

/// The options of `roll rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Not needed: the journal holds the release the run was approved with. If given, it
    /// must be that release.
    #[arg(short, long)]
    playbook: Option<PathBuf>,
    /// The group whose last run to undo.
    #[arg(short, long)]
    group: String,
    /// Approve the plan without asking.
    #[arg(long)]
    yes: bool,
    /// Print the plan and stop: nothing is changed.
    #[arg(long)]
    dry_run: bool,
    /// Leave the upgraded hosts stopped, on the new release, for investigation.
    #[arg(long)]
    keep_upgraded_stopped: bool,
    /// Delete restored queues with their messages instead of keeping them in holding
    /// queues (the loss is counted and reported).
    #[arg(long)]
    allow_message_loss: bool,
}

impl RollbackArgs {
    /// The command's settings: these options, the state directory and the output format.
    fn settings(self, state_dir: PathBuf, output: OutputFormat) -> commands::rollback::Settings {
        commands::rollback::Settings {
            playbook: self.playbook,
            group: self.group,
            yes: self.yes,
            dry_run: self.dry_run,
            keep_upgraded_stopped: self.keep_upgraded_stopped,
            allow_message_loss: self.allow_message_loss,
            state_dir,
            output,
        }
    }
}

fn parse_half(value: &str) -> Result<Half, String> {
    value
        .parse::<Half>()
        .map_err(|_| format!("half must be a or b, not {value:?}"))
}

/// Sets up tracing on stderr: `RUST_LOG` decides the detail; by default warnings, without
/// lapin's own error lines for channels the broker closes (a `--probe` expects 406s, and
/// every real failure reaches the operator as a typed error anyway).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::redact::Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Parses the command line, runs the command, prints errors, and returns the exit code.
pub fn main() -> u8 {
    // A write past a file size limit fails (EFBIG) instead of killing the process, so that
    // the journal can undo it and the run stop cleanly.
    // SAFETY: setting a signal to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    raise_open_files();
    let cli = Cli::parse();
    let term = std::env::var("TERM").ok();
    crate::terminal::set_mode(crate::terminal::Mode::choose(
        cli.quiet,
        cli.no_progress,
        std::io::stderr().is_terminal(),
        term.as_deref(),
    ));
    init_tracing();
    let result = run(cli);
    // Whatever is still drawn goes before the error, and before the process ends.
    crate::terminal::clear();
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            crate::output::error(&format!("roll: error: {err}"));
            err.exit_code()
        }
    };
    log_usage();
    code
}

/// Raises the soft limit of open files towards the hard one (at most 65,536): every
/// command in flight holds a few descriptors (its socket to the host's master connection,
/// its pipes), so that a run of a few hundred hosts at once would pass the usual soft limit
/// of 1,024 and see its commands fail.
fn raise_open_files() {
    const ENOUGH: libc::rlim_t = 65_536;
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = limit.rlim_max.min(ENOUGH);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The CPU time this process used (all its threads, user and system), that of the children
/// it waited for (the ssh processes that made the connections) and how many commands it ran
/// on hosts, as one line at debug level of target `roll::usage`
/// (`RUST_LOG=roll::usage=debug`): bench/run tells roll's own work from the SSH client's
/// with it.
fn log_usage() {
    if !tracing::enabled!(target: "roll::usage", tracing::Level::DEBUG) {
        return;
    }
    let seconds = |who| {
        // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return (0.0, 0.0);
        }
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (s(usage.ru_utime), s(usage.ru_stime))
    };
    let (user, sys) = seconds(libc::RUSAGE_SELF);
    let (children_user, children_sys) = seconds(libc::RUSAGE_CHILDREN);
    tracing::debug!(
        target: "roll::usage",
        user,
        sys,
        children_user,
        children_sys,
        commands = crate::remote::commands_run(),
        "cpu seconds"
    );
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<u8, Error> {
    // Every command but the two that describe roll itself reads the inventory first.
    let load = || inventory::load(&cli.inventory);
    match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Report {
            run,
            last,
            group,
            to,
        } => commands::report::run(
            &load()?,
            &commands::report::Settings {
                run,
                last,
                group,
                to,
                state_dir: state_dir(cli.state_dir)?,
                output: cli.output,
            },
        ),
        Command::History { group, limit } => commands::history::run(
            &load()?,
            &group,
            limit,
            &state_dir(cli.state_dir)?,
            cli.output,
        ),
        Command::Man => manual(),
        Command::Inventory {
            action:
                Some(InventoryAction::Import {
                    ansible,
                    half_by,
                    groups,
                    to,
                    force,
                }),
            ..
        } => commands::inventory::import(&commands::inventory::ImportSettings {
            ansible,
            options: crate::inventory::ansible::convert::Options { half_by, groups },
            to,
            force,
        }),
        Command::Inventory {
            action: None,
            group,
            half,
        } => commands::inventory::run(&load()?, group.as_deref(), half, cli.output),
        Command::Check { group } => {
            runtime()?.block_on(commands::check::run(&load()?, group.as_deref(), cli.output))
        }
        Command::QueueDiff {
            playbook,
            group,
            half,
            probe,
        } => runtime()?.block_on(commands::queue_diff::run(
            &load()?,
            &playbook,
            &group,
            half,
            probe,
            cli.output,
        )),
        Command::Upgrade(args) => {
            let settings = args.settings(state_dir(cli.state_dir)?, cli.output);
            runtime()?.block_on(commands::upgrade::run(&load()?, settings))
        }
        Command::Rollback(args) => {
            let settings = args.settings(state_dir(cli.state_dir)?, cli.output);
            runtime()?.block_on(commands::rollback::run(&load()?, settings))
        }
        Command::Resume { group } => {
            let state_dir = state_dir(cli.state_dir)?;
            runtime()?.block_on(commands::resume::run(
                &load()?,
                &group,
                &state_dir,
                cli.output,
            ))
        }
        Command::Freeze(args) => {
            let settings = args.settings(cli.output);
            runtime()?.block_on(commands::freeze::freeze(&load()?, settings))
        }
        Command::Unfreeze {
            group,
            yes,
            dry_run,
        } => {
            let settings = commands::freeze::UnfreezeSettings {
                group,
                yes,
                dry_run,
                output: cli.output,
            };
            runtime()?.block_on(commands::freeze::unfreeze(&load()?, settings))
        }
        Command::Status { group, playbook } => {
            let state_dir = state_dir(cli.state_dir)?;
            runtime()?.block_on(commands::status::run(
                &load()?,
                group.as_deref(),
                playbook.as_deref(),
                &state_dir,
                cli.output,
            ))
        }
    }
}

/// Writes the completion script of `shell` to stdout.
fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "roll", &mut out);
    crate::output::write_stdout(&out)?;
    Ok(crate::exit::SUCCESS)
}

/// Writes the manual page (roff) to stdout: the command, then a section per subcommand.
fn manual() -> Result<u8, Error> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .map_err(|e| Error::Usage(format!("the manual page: {e}")))?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        out.extend_from_slice(format!(".SH \"ROLL {}\"\n", name.to_uppercase()).as_bytes());
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        for para in about.split("\n\n") {
            // clap joins a doc comment's lines: each example on a line of its own again.
            let lines = roff_text(para)
                .replace(" Example: ", "\n.br\nExample: ")
                .replace('\n', "\n.br\n")
                .replace("\n.br\n.br\n", "\n.br\n");
            out.extend_from_slice(format!(".PP\n{lines}\n").as_bytes());
        }
        out.extend_from_slice(format!(".PP\nUsage: {}\n", roff_text(&usage(sub, name))).as_bytes());
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let flag = match (arg.get_short(), arg.get_long()) {
                (Some(s), Some(l)) => format!("-{s}, --{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, None) => arg.get_id().to_string().to_uppercase(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            out.extend_from_slice(
                format!(".TP\n\\fB{}\\fR\n{}\n", roff_text(&flag), roff_text(&help)).as_bytes(),
            );
        }
    }
    crate::output::write_stdout(&out)?;
    Ok(crate::exit::SUCCESS)
}

/// A subcommand's usage line.
fn usage(sub: &clap::Command, name: &str) -> String {
    let mut sub = sub.clone().bin_name(format!("roll {name}"));
    sub.render_usage()
        .to_string()
        .trim_start_matches("Usage: ")
        .to_string()
}

/// Text made safe for roff: backslashes doubled, a line never starting with a dot or a quote.
fn roff_text(text: &str) -> String {
    text.replace('\\', "\\e")
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    /// A soft limit of open files below what a large run holds is raised to the hard one.
    #[test]
    fn the_soft_limit_of_open_files_is_raised() {
        // SAFETY: nextest runs each test in a process of its own.
        let limit = unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = 64.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            limit
        };
        raise_open_files();
        let now = unsafe {
            let mut now: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
            now
        };
        assert_eq!(now.rlim_cur, limit.rlim_max.min(65_536));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn freeze_takes_a_time_or_a_duration_and_refuses_anything_else() {
        let parsed = Cli::try_parse_from([
            "roll",
            "freeze",
            "--group",
            "dev",
            "--reason",
            "a \"quoted\" reason",
            "--until",
            "2h",
        ])
        .expect("parses");
        let Command::Freeze(args) = parsed.command else {
            panic!("not freeze: {parsed:?}");
        };
        assert_eq!(args.reason, "a \"quoted\" reason");
        assert_eq!(
            args.until,
            Some(freeze::Until::After(std::time::Duration::from_secs(7200)))
        );
        let err = Cli::try_parse_from([
            "roll", "freeze", "--group", "dev", "--reason", "r", "--until", "friday",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), i32::from(exit::USAGE));
        let err = Cli::try_parse_from(["roll", "freeze", "--group", "dev"]).unwrap_err();
        assert_eq!(
            err.exit_code(),
            i32::from(exit::USAGE),
            "--reason is required"
        );
    }

    #[test]
    fn a_bad_half_is_a_usage_error() {
        let err = Cli::try_parse_from(["roll", "inventory", "--half", "c"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(exit::USAGE));
    }
}
