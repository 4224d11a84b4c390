//! One Prometheus text exposition out of several: a member serving several validators keeps a
//! registry per validator (each series labelled with its validator), and `/metrics` must list
//! each metric family once, with one `# HELP` and one `# TYPE`, whatever number of registries
//! carry it; Prometheus refuses a family that appears twice.
//!
//! Pure text in, text out: it reorders nothing within a family and drops nothing but the
//! repeated headers.

/// The families of `texts` (Prometheus' classic text format, as [`super::Metrics::encode`]
/// gives), each once, in the order each first appears, with the samples of every text in the
/// order of `texts`.
pub fn merge(texts: &[String]) -> String {
    if let [one] = texts {
        return one.clone();
    }
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<String>, Vec<String>)> = Default::default();
    for text in texts {
        let mut current = String::new();
        for line in text.lines() {
            if let Some(name) = header_name(line) {
                if name != current {
                    current = name.to_string();
                    if !families.contains_key(&current) {
                        order.push(current.clone());
                    }
                }
                let (headers, _) = families.entry(current.clone()).or_default();
                if !headers.iter().any(|h| h == line) {
                    headers.push(line.to_string());
                }
            } else if !line.trim().is_empty() && line != "# EOF" {
                families.entry(current.clone()).or_default().1.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((headers, samples)) = families.remove(&name) {
            for line in headers.iter().chain(&samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The family a `# HELP name …`, `# TYPE name …` or `# UNIT name …` line introduces.
fn header_name(line: &str) -> Option<&str> {
    let rest = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| line.strip_prefix(p))?;
    rest.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_listed_once_with_every_validators_samples() {
        let a = "# HELP failoverd_active Active.\n# TYPE failoverd_active gauge\nfailoverd_active{validator=\"a\"} 1\n# HELP failoverd_x X.\n# TYPE failoverd_x counter\nfailoverd_x_total{validator=\"a\"} 3\n".to_string();
        let b = "# HELP failoverd_active Active.\n# TYPE failoverd_active gauge\nfailoverd_active{validator=\"b\"} 0\n# HELP failoverd_y Y.\n# TYPE failoverd_y gauge\nfailoverd_y{validator=\"b\"} 2\n".to_string();
        let merged = merge(&[a.clone(), b]);
        assert_eq!(
            merged,
            "# HELP failoverd_active Active.\n# TYPE failoverd_active gauge\nfailoverd_active{validator=\"a\"} 1\nfailoverd_active{validator=\"b\"} 0\n# HELP failoverd_x X.\n# TYPE failoverd_x counter\nfailoverd_x_total{validator=\"a\"} 3\n# HELP failoverd_y Y.\n# TYPE failoverd_y gauge\nfailoverd_y{validator=\"b\"} 2\n"
        );
        assert_eq!(merge(std::slice::from_ref(&a)), a, "one registry is served as it is");
        assert_eq!(merged.matches("# TYPE failoverd_active").count(), 1);
    }
}
