//! Plans as people read them: rendered from the plan's data (its steps, its queues, its
//! hosts), so the text shows what execution will do and cannot drift from it.

use std::fmt;

use crate::plan::rollback::RollbackPlan;
use crate::plan::upgrade::{QueueChange, UpgradePlan};
use crate::step;

/// An upgrade plan, for people.
pub fn upgrade_plan(plan: &UpgradePlan) -> String {
    Upgrade(plan).to_string()
}

/// A rollback plan, for people.
pub fn rollback_plan(plan: &RollbackPlan) -> String {
    Rollback(plan).to_string()
}

struct Upgrade<'a>(&'a UpgradePlan);

struct Rollback<'a>(&'a RollbackPlan);

/// A queue's backlog, where it goes and how long it is expected to be without a consumer.
fn backlog(q: &QueueChange, preserve: bool) -> String {
    let held = if q.held_while_running {
        ", moved to its holding queue before its consumers stop"
    } else if preserve && q.messages > 0 {
        ", moved while its consumers are stopped"
    } else {
        ""
    };
    let stopped = match q.expected_stopped_seconds {
        Some(s) => format!("without a consumer for about {s:.1}s"),
        None => "time without a consumer: not measured yet".to_string(),
    };
    format!("{} messages{held}; {stopped}", q.messages)
}

impl fmt::Display for Upgrade<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Upgrade of group {} half {} to {} {} (playbook {}), run {}",
            self.0.group,
            self.0.half,
            self.0.package,
            self.0.version,
            self.0.playbook,
            self.0.run_id
        )?;
        self.fmt_order(f)?;
        f.write_str(&super::artifacts::lines(self.0))?;
        self.fmt_steps(f)?;
        self.fmt_queues(f)?;
        self.fmt_other_half(f)?;
        write!(f, "  {}", self.0.queue_summary)
    }
}

impl Upgrade<'_> {
    fn fmt_order(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.0;
        let canary = plan.canary();
        writeln!(
            f,
            "  waves, in order (at most {} hosts at a time within a wave):",
            plan.parallel
        )?;
        for wave in plan.waves() {
            let first = wave.hosts.first().map(String::as_str);
            let label = if wave.number == 1 && wave.hosts.len() == 1 && first == canary {
                " (canary)".to_string()
            } else {
                String::new()
            };
            let after: Vec<String> = wave
                .after
                .iter()
                .map(|step| match step {
                    crate::step::Step::Pause(_) => "then PAUSE (the run ends, paused)".into(),
                    crate::step::Step::Soak(_) => format!(
                        "then the gates hold for {}",
                        plan.gates
                            .min_healthy
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    ),
                    other => format!("then {other}"),
                })
                .collect();
            let after = if after.is_empty() {
                String::new()
            } else {
                format!(", {}", after.join(", "))
            };
            writeln!(
                f,
                "    wave {}{label}: {}{after}",
                wave.number,
                wave.hosts.join(" ")
            )?;
        }
        let mut gates = vec!["its verification".to_string()];
        if plan.gates.command {
            gates.push("the playbook's gate command".into());
        }
        if let Some(max) = plan.gates.max_backlog {
            gates.push(format!(
                "each of its queues at most {max} messages and consumed"
            ));
        }
        let within = if plan.gates.per_host() {
            format!(" (within {})", plan.gates.timeout)
        } else {
            String::new()
        };
        writeln!(
            f,
            "  gate of each host before the next wave: {}{within}",
            gates.join(", ")
        )?;
        writeln!(f, "  on failure: {}", plan.policy)?;
        let passive: Vec<&str> = self
            .0
            .hosts
            .iter()
            .filter(|h| !h.start)
            .map(|h| h.host.as_str())
            .collect();
        if !passive.is_empty() {
            writeln!(
                f,
                "  passive, upgraded but left stopped: {}",
                passive.join(" ")
            )?;
        }
        Ok(())
    }

    /// The steps, as execution reads them.
    fn fmt_steps(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  steps of each host, in order (still running | stopped | started):"
        )?;
        for host in &self.0.hosts {
            writeln!(
                f,
                "    {}: {} | {} | {}",
                host.host,
                step::list(&host.ready),
                step::list(&host.stopped),
                step::list(&host.started)
            )?;
        }
        if !self.0.group_queues.is_empty() {
            writeln!(
                f,
                "  on the broker: {} | once every consumer is stopped: {} | once the half \
                 runs: {}",
                step::list(&self.0.broker.before),
                step::list(&self.0.broker.stopped),
                step::list(&self.0.broker.after)
            )?;
        }
        if self.0.two_phase {
            writeln!(
                f,
                "  every host of half {} is ready before any stops; then all stop, the canary \
                 starts, then the rest",
                self.0.half
            )?;
        }
        Ok(())
    }

    fn fmt_queues(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  queues to recreate: {} ({} messages in them)",
            self.0.queue_count(),
            self.0.messages_at_risk
        )?;
        let transient: u64 = self
            .0
            .group_queues
            .iter()
            .chain(self.0.hosts.iter().flat_map(|h| &h.queues))
            .map(|q| q.transient)
            .sum();
        if transient > 0 {
            writeln!(
                f,
                "  at risk: {transient} of those messages are transient (not persistent): a \
                 broker restart while they are held loses them, as it would where they are"
            )?;
        }
        if self.0.queue_count() > 0 {
            if self.0.preserve_messages {
                writeln!(
                    f,
                    "  messages: kept; each queue's messages, and those published meanwhile, \
                     wait in a holding queue (roll.hold.{}.<queue>) while it is recreated",
                    self.0.run_id
                )?;
            } else {
                writeln!(
                    f,
                    "  messages: NOT kept (--allow-message-loss): the {} messages in these \
                     queues, and those published while they are unbound, are lost",
                    self.0.messages_at_risk
                )?;
            }
        }
        let owned = self
            .0
            .hosts
            .iter()
            .flat_map(|h| h.queues.iter().map(move |q| (h.host.as_str(), q)));
        let shared = self.0.group_queues.iter().map(|q| ("shared", q));
        for (owner, q) in owned.chain(shared) {
            writeln!(
                f,
                "    {owner}: {} [{}] ({})",
                q.name,
                q.changes.join(", "),
                backlog(q, self.0.preserve_messages)
            )?;
        }
        Ok(())
    }

    fn fmt_other_half(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let other = self.0.half.other();
        if self.0.critical_window {
            writeln!(
                f,
                "  critical window: yes: {} (half {other}) stopped, never upgraded, while the \
                 shared queues are recreated ({}); the upgraded half then starts",
                self.0.critical_stops.join(" "),
                step::list(&self.0.critical_steps)
            )?;
        } else if !self.0.two_phase {
            writeln!(f, "  critical window: no; half {other} keeps running")?;
        }
        if self.0.failover.is_empty() {
            writeln!(
                f,
                "  failover: none (half {other} already runs {})",
                self.0.version
            )
        } else {
            writeln!(
                f,
                "  failover on the old release: {} (half {other})",
                self.0.failover.join(" ")
            )
        }
    }
}

impl fmt::Display for Rollback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Rollback of run {} (group {} half {}), run {}",
            self.0.rolls_back, self.0.group, self.0.half, self.0.run_id
        )?;
        writeln!(f, "  1. stop the upgraded hosts: {}", list(&self.0.stop))?;
        writeln!(
            f,
            "  2. restore {} queues to their backed-up definitions and bindings{}: {}",
            self.0.queues.len(),
            if self.0.preserve_messages {
                ", with their messages (held, then moved back once the old release runs)"
            } else {
                ", DELETING their messages (--allow-message-loss)"
            },
            list(&self.0.queues)
        )?;
        if !self.0.restored.is_empty() {
            writeln!(
                f,
                "     already put back by the failover (held messages still moved back): {}",
                list(&self.0.restored)
            )?;
        }
        writeln!(
            f,
            "  3. start the old release (where not running): {}",
            list(&self.0.start_old)
        )?;
        for s in &self.0.swaps {
            writeln!(
                f,
                "     pair {}: {} (on the old release) becomes active, {} passive",
                s.pair, s.to, s.from
            )?;
        }
        writeln!(f, "  4. report the failover time")?;
        write!(f, "  5. repair the upgraded hosts")?;
        if self.0.keep_upgraded_stopped {
            write!(f, ", left stopped (--keep-upgraded-stopped)")?;
        }
        if self.0.repair.is_empty() {
            return write!(f, ": none");
        }
        write!(f, ", in order:")?;
        for r in &self.0.repair {
            let version = r.version.as_ref().map(|v| format!(" (to {v})"));
            write!(
                f,
                "\n     {}{}: {}",
                r.host,
                version.unwrap_or_default(),
                step::list(&r.steps)
            )?;
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures;

    #[test]
    fn an_upgrade_plan_shows_its_order_steps_and_critical_window() {
        let text = upgrade_plan(&fixtures::expire_plan_b());
        assert!(
            text.contains("wave 1 (canary): px5\n    wave 2: px6 px7 px8 pxatx1\n"),
            "{text}"
        );
        assert!(
            text.contains("critical window: yes: px1 px2 px3 px4 (half a)"),
            "{text}"
        );
        assert!(
            text.contains("    px5: backup, upgrade, stage files, hold q.pump.px5 | stop, verify stopped, recreate q.pump.px5, deploy, reset queue state | start, release q.pump.px5, verify"),
            "{text}"
        );
        assert!(
            text.contains("on the broker: back up q.cluster, hold q.cluster | once every consumer is stopped: recreate q.cluster"),
            "{text}"
        );
    }

    #[test]
    fn each_queue_shows_its_backlog_where_it_goes_and_its_expected_time_without_a_consumer() {
        let mut plan = fixtures::expire_plan_b();
        let q = &mut plan.hosts[0].queues[0];
        q.messages = 50_000;
        q.held_while_running = true;
        q.expected_stopped_seconds = Some(4.0);
        let text = upgrade_plan(&plan);
        assert!(
            text.contains("px5: q.pump.px5 [x-expires none -> 604800000] (50000 messages, moved to its holding queue before its consumers stop; without a consumer for about 4.0s)"),
            "{text}"
        );
        assert!(
            text.contains("messages, moved while its consumers are stopped; time without a consumer: not measured yet)"),
            "{text}"
        );
    }

    #[test]
    fn every_step_of_the_plan_is_in_its_text() {
        let plan = fixtures::expire_plan_b();
        let text = upgrade_plan(&plan);
        for host in &plan.hosts {
            let line = format!(
                "    {}: {} | {} | {}",
                host.host,
                step::list(&host.ready),
                step::list(&host.stopped),
                step::list(&host.started)
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_minor_plan_shows_the_passive_host_and_no_failover() {
        let text = upgrade_plan(&fixtures::minor_plan_a());
        assert!(
            text.contains("failover: none (half b already runs 3.3.1)"),
            "{text}"
        );
        assert!(
            text.contains("passive, upgraded but left stopped: pxatx2"),
            "{text}"
        );
    }

    #[test]
    fn a_rollback_plan_shows_the_swap_and_the_repairs() {
        let plan = fixtures::rollback_plan(true, false);
        let text = rollback_plan(&plan);
        assert!(
            text.contains("pair pxatx: pxatx2 (on the old release) becomes active"),
            "{text}"
        );
        assert!(
            text.contains("px5 (to 3.2.0.post1): reinstall, restore files"),
            "{text}"
        );
        let kept = rollback_plan(&fixtures::rollback_plan(false, true));
        assert!(kept.contains("--keep-upgraded-stopped"), "{kept}");
    }
}
