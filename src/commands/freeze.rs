//! `roll freeze` and `roll unfreeze`: set and lift a group's change freeze (see
//! [`crate::freeze`]), each after showing what it will do and the operator's approval.
//! Neither takes the group's lock: a freeze can be set while a run goes on (that run, approved
//! before, finishes; the next upgrade is refused).

use crate::broker::management::Management;
use crate::error::Error;
use crate::freeze::{self, Freeze, State, Until};
use crate::inventory::{Group, Inventory};
use crate::output::{self, OutputFormat};
use crate::render::{self, FreezeReport};
use crate::{clock, exit, session};

/// The settings of `roll freeze`.
#[derive(Debug, Clone)]
pub struct FreezeSettings {
    pub group: String,
    pub reason: String,
    pub until: Option<Until>,
    pub yes: bool,
    pub dry_run: bool,
    pub output: OutputFormat,
}

/// The settings of `roll unfreeze`.
#[derive(Debug, Clone)]
pub struct UnfreezeSettings {
    pub group: String,
    pub yes: bool,
    pub dry_run: bool,
    pub output: OutputFormat,
}

/// The group and a management API client for its broker.
fn broker_of(inventory: &Inventory, name: &str) -> Result<(Group, Management), Error> {
    let group = super::select_groups(inventory, Some(name))?
        .first()
        .copied()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("no group {name}")))?;
    let password = crate::broker::password(&group.broker)?;
    let management = Management::new(&group.broker, password)?;
    Ok((group, management))
}

/// The freeze to record, set at `now_ms`.
/// The report of `action` on the group's freeze queue, as planned (not done yet).
fn planned(
    action: &'static str,
    group: &Group,
    dry_run: bool,
    freeze: Option<Freeze>,
    replaces: Option<Freeze>,
) -> FreezeReport {
    FreezeReport {
        action,
        group: group.name.clone(),
        queue: freeze::queue_name(&group.name),
        broker: group.broker.display(),
        vhost: group.broker.vhost.clone(),
        dry_run,
        done: false,
        freeze,
        replaces,
    }
}

fn freeze_at(settings: &FreezeSettings, now_ms: u64) -> Freeze {
    Freeze {
        group: settings.group.clone(),
        by: freeze::by_self(),
        reason: settings.reason.trim().to_string(),
        since: clock::rfc3339(now_ms),
        until: settings.until.map(|u| clock::rfc3339(u.at(now_ms))),
    }
}

/// Refuses a reason that says nothing and an end that has passed.
fn check_settings(settings: &FreezeSettings, now_ms: u64) -> Result<(), Error> {
    if settings.reason.trim().is_empty() {
        return Err(Error::Usage(
            "--reason must say why the group is frozen (it is shown to whoever is refused)".into(),
        ));
    }
    if let Some(until) = settings.until
        && until.at(now_ms) <= now_ms
    {
        return Err(Error::Usage(format!(
            "--until {} has passed already: the freeze would refuse nothing",
            clock::rfc3339(until.at(now_ms))
        )));
    }
    Ok(())
}

/// Prints what was done: a line for people, or the report as JSON.
fn print_done(report: &FreezeReport, format: OutputFormat) -> Result<(), Error> {
    match format {
        OutputFormat::Table => output::print_text(&render::freeze_done(report))?,
        OutputFormat::Json => output::print_json(report)?,
    }
    Ok(())
}

/// Runs `roll freeze`.
pub async fn freeze(inventory: &Inventory, settings: FreezeSettings) -> Result<u8, Error> {
    check_settings(&settings, clock::now_millis())?;
    let (group, management) = broker_of(inventory, &settings.group)?;
    let replaces = match freeze::read(&management, &group.name).await? {
        Some(existing) if existing.state_at(clock::now_millis()) == State::Frozen => {
            return Err(freeze::FreezeError::AlreadyFrozen {
                group: group.name.clone(),
                freeze: Box::new(existing),
            }
            .into());
        }
        expired => expired,
    };
    let freeze = Some(freeze_at(&settings, clock::now_millis()));
    let mut report = planned("freeze", &group, settings.dry_run, freeze, replaces);
    let text = render::freeze_plan(&report);
    let then = render::Then::of(settings.dry_run, settings.yes);
    render::show_plan(&text, &report, settings.output, then)?;
    if settings.dry_run {
        return Ok(exit::SUCCESS);
    }
    if !settings.yes {
        session::approve(&group.name)?;
    }
    // Recorded as of now, not as of the plan (an approval can take a while).
    let now = clock::now_millis();
    check_settings(&settings, now)?;
    let set = freeze_at(&settings, now);
    freeze::set(&management, &set).await?;
    report.freeze = Some(set);
    report.done = true;
    print_done(&report, settings.output)?;
    Ok(exit::SUCCESS)
}

/// Runs `roll unfreeze`: a group that is not frozen is said so, exit 0.
pub async fn unfreeze(inventory: &Inventory, settings: UnfreezeSettings) -> Result<u8, Error> {
    let (group, management) = broker_of(inventory, &settings.group)?;
    let existing = freeze::read(&management, &group.name).await?;
    let mut report = planned("unfreeze", &group, settings.dry_run, existing, None);
    if report.freeze.is_none() {
        match settings.output {
            OutputFormat::Table => output::print_text(&render::unfreeze_plan(&report))?,
            OutputFormat::Json => output::print_json(&report)?,
        }
        return Ok(exit::SUCCESS);
    }
    let text = render::unfreeze_plan(&report);
    let then = render::Then::of(settings.dry_run, settings.yes);
    render::show_plan(&text, &report, settings.output, then)?;
    if settings.dry_run {
        return Ok(exit::SUCCESS);
    }
    if !settings.yes {
        session::approve(&group.name)?;
    }
    freeze::lift(&management, &group.name).await?;
    report.done = true;
    print_done(&report, settings.output)?;
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(reason: &str, until: Option<Until>) -> FreezeSettings {
        FreezeSettings {
            group: "dev".into(),
            reason: reason.into(),
            until,
            yes: true,
            dry_run: false,
            output: OutputFormat::Table,
        }
    }

    #[test]
    fn an_empty_reason_or_a_past_until_is_a_usage_error() {
        let now = 1_795_291_200_000;
        let empty = check_settings(&settings("  ", None), now).unwrap_err();
        assert_eq!(empty.exit_code(), exit::USAGE);
        let past = check_settings(&settings("x", Some(Until::At(now - 1))), now).unwrap_err();
        assert!(past.to_string().contains("has passed"), "{past}");
        assert!(check_settings(&settings("x", Some(Until::At(now + 1))), now).is_ok());
    }

    #[test]
    fn a_relative_until_counts_from_the_time_it_is_set() {
        let now = 1_795_291_200_000;
        let set = freeze_at(
            &settings(
                " release day ",
                Some(Until::After(Duration::from_secs(7200))),
            ),
            now,
        );
        assert_eq!(set.reason, "release day");
        assert_eq!(set.since, "2026-11-21T20:00:00.000Z");
        assert_eq!(set.until.as_deref(), Some("2026-11-21T22:00:00.000Z"));
    }
}
