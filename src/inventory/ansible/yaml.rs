//! Ansible's YAML inventory format: a mapping of groups (usually `all`), each a mapping with
//! `hosts` (host pattern -> its variables, or nothing), `vars` and `children` (group name ->
//! a group, or nothing).

use std::path::Path;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};

use super::{AnsibleHost, AnsibleInventory, ImportErrors, Problems, Var, check_value, expand};

pub(super) fn parse(text: &str, path: &Path) -> Result<AnsibleInventory, ImportErrors> {
    let mut inventory = AnsibleInventory::new(path);
    let mut problems = Problems::new(path);
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            let line = load_error_line(&e);
            problems.at(line, format!("not a YAML inventory: {e}"));
            return problems.into_result(inventory);
        }
    };
    let Some(top) = root.as_mapping() else {
        problems.at(line_of(&root), "the top level must be a mapping of groups");
        return problems.into_result(inventory);
    };
    if top.get_node("plugin").is_some() {
        problems.at(
            line_of(&root),
            "an inventory plugin's configuration (plugin: ...), not an inventory: \
             run `ansible-inventory -i FILE --list --yaml` and import its output",
        );
        return problems.into_result(inventory);
    }
    for (name, group) in top.iter() {
        read_group(&mut inventory, &mut problems, name, group);
    }
    problems.into_result(inventory)
}

fn read_group(
    inventory: &mut AnsibleInventory,
    problems: &mut Problems,
    name: &MarkedScalarNode,
    node: &Node,
) {
    let line = scalar_line(name);
    let group = name.as_str().to_string();
    inventory.group_mut(&group, line);
    let body = match node {
        Node::Mapping(m) => m,
        Node::Scalar(s) if s.as_str().is_empty() || s.as_str() == "~" => return,
        other => {
            problems.at(
                line_of(other),
                format!("group {group}: a mapping (hosts, vars, children) expected"),
            );
            return;
        }
    };
    for (key, value) in body.iter() {
        match key.as_str() {
            "hosts" => read_hosts(inventory, problems, &group, value),
            "vars" => {
                if let Some(vars) = variables(problems, value, &format!("group {group}'s vars")) {
                    inventory.group_mut(&group, line).vars.extend(vars);
                }
            }
            "children" => match value {
                Node::Mapping(children) => {
                    for (child, child_node) in children.iter() {
                        inventory
                            .group_mut(&group, line)
                            .children
                            .push((child.as_str().to_string(), scalar_line(child)));
                        read_group(inventory, problems, child, child_node);
                    }
                }
                Node::Scalar(s) if s.as_str().is_empty() => {}
                other => problems.at(
                    line_of(other),
                    format!("group {group}'s children: a mapping of groups expected"),
                ),
            },
            other => problems.at(
                scalar_line(key),
                format!("group {group}: unknown key {other:?} (known: hosts, vars, children)"),
            ),
        }
    }
}

fn read_hosts(inventory: &mut AnsibleInventory, problems: &mut Problems, group: &str, node: &Node) {
    let hosts = match node {
        Node::Mapping(m) => m,
        Node::Scalar(s) if s.as_str().is_empty() => return,
        other => {
            problems.at(
                line_of(other),
                format!("group {group}'s hosts: a mapping of hosts expected"),
            );
            return;
        }
    };
    for (pattern, vars_node) in hosts.iter() {
        let line = scalar_line(pattern);
        let vars = match vars_node {
            Node::Scalar(s) if s.as_str().is_empty() || s.as_str() == "~" => Some(vec![]),
            _ => variables(problems, vars_node, &format!("host {}", pattern.as_str())),
        };
        let Some(vars) = vars else { continue };
        match expand(pattern.as_str()) {
            Ok(names) => {
                let hosts = names.into_iter().map(|name| AnsibleHost {
                    name,
                    line,
                    vars: vars.clone(),
                });
                inventory.group_mut(group, line).hosts.extend(hosts);
            }
            Err(message) => problems.at(line, message),
        }
    }
}

/// A mapping of variables with scalar values.
fn variables(problems: &mut Problems, node: &Node, what: &str) -> Option<Vec<Var>> {
    let mapping: &MarkedMappingNode = match node {
        Node::Mapping(m) => m,
        Node::Scalar(s) if s.as_str().is_empty() => return Some(vec![]),
        other => {
            problems.at(line_of(other), format!("{what}: a mapping expected"));
            return None;
        }
    };
    let mut vars = Vec::new();
    for (key, value) in mapping.iter() {
        match value {
            Node::Scalar(s) => {
                let var = Var {
                    key: key.as_str().to_string(),
                    value: s.as_str().to_string(),
                    line: scalar_line(key),
                };
                check_value(problems, &var);
                vars.push(var);
            }
            other => problems.at(
                line_of(other),
                format!(
                    "{what}: variable {} is a list or a mapping: roll keeps only text, \
                     numbers and booleans",
                    key.as_str()
                ),
            ),
        }
    }
    Some(vars)
}

fn scalar_line(node: &MarkedScalarNode) -> usize {
    node.span().start().map_or(1, |m| m.line())
}

fn line_of(node: &Node) -> usize {
    node.span().start().map_or(1, |m| m.line())
}

fn load_error_line(e: &marked_yaml::LoadError) -> usize {
    use marked_yaml::LoadError as E;
    match e {
        E::TopLevelMustBeMapping(m)
        | E::TopLevelMustBeSequence(m)
        | E::UnexpectedAnchor(m)
        | E::MappingKeyMustBeScalar(m)
        | E::UnexpectedTag(m)
        | E::ScanError(m, _) => m.line(),
        E::DuplicateKey(d) => scalar_line(&d.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new("hosts.yml"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn groups_hosts_vars_and_children_with_lines() {
        let text = "all:\n\
                    \x20 vars:\n\
                    \x20   ansible_port: 2222\n\
                    \x20 children:\n\
                    \x20   ops:\n\
                    \x20     hosts:\n\
                    \x20       px[1:2]:\n\
                    \x20         half: a\n\
                    \x20       pxatx1:\n\
                    \x20     vars:\n\
                    \x20       roll_broker_vhost: ops\n\
                    \x20   empty:\n";
        let i = parse(text, Path::new("hosts.yml")).unwrap();
        let names: Vec<&str> = i.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["all", "ops", "empty"]);
        let all = i.group("all").unwrap();
        assert_eq!(all.vars[0].key, "ansible_port");
        assert_eq!(all.vars[0].value, "2222");
        assert_eq!(all.vars[0].line, 3);
        assert_eq!(
            all.children,
            [("ops".to_string(), 5), ("empty".to_string(), 12)]
        );
        let ops = i.group("ops").unwrap();
        let hosts: Vec<(&str, usize, usize)> = ops
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.line, h.vars.len()))
            .collect();
        assert_eq!(hosts, [("px1", 7, 1), ("px2", 7, 1), ("pxatx1", 9, 0)]);
        assert_eq!(ops.vars[0].value, "ops");
    }

    #[test]
    fn what_is_not_understood_is_named_with_its_line() {
        let e = errors("all:\n  hosts:\n    px[2:1]:\n  hostz:\n    x:\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("hosts.yml:3: empty range"), "{e:?}");
        assert!(
            e[1].starts_with("hosts.yml:4: group all: unknown key \"hostz\""),
            "{e:?}"
        );
        let e = errors("plugin: amazon.aws.aws_ec2\n");
        assert!(e[0].contains("inventory plugin"), "{e:?}");
        let e = errors("all:\n  vars:\n    list: [1, 2]\n");
        assert!(e[0].starts_with("hosts.yml:3:"), "{e:?}");
        let e = errors("all:\n  hosts: {a: 1\n");
        assert!(e[0].contains("not a YAML inventory"), "{e:?}");
    }
}
