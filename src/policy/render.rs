//! Policy rendering, beside the flow: the route table as text and JSON for
//! `stagedoor policy show`, with every annotation error and conflict.

use serde_json::{Value, json};

use super::{Policy, Route};

/// One table row: a route line on one host.
struct Row<'a> {
    host: String,
    route: &'a Route,
}

impl Row<'_> {
    fn cells(&self) -> [String; 7] {
        let r = self.route;
        let methods = r.methods.as_ref().map_or_else(
            || "*".to_owned(),
            |l| l.iter().map(|m| &**m).collect::<Vec<_>>().join(","),
        );
        let requirement = match &r.requirement {
            super::Requirement::Public => "public".to_owned(),
            super::Requirement::Authenticated => "authenticated".to_owned(),
            super::Requirement::Scopes(_) => r.required_scopes.as_deref().unwrap_or("").to_owned(),
        };
        let groups = if r.allowed_refs.is_empty() {
            "-".to_owned()
        } else {
            r.allowed_refs.join(",")
        };
        // Catalog-supplied text reaches a terminal: escaped (lang::escaped).
        [
            self.host.clone(),
            methods,
            r.path.to_string(),
            requirement,
            groups,
            r.entity.to_string(),
            r.owner.as_deref().unwrap_or("-").to_owned(),
        ]
        .map(|c| super::lang::escaped(&c).into_owned())
    }
}

impl Policy {
    fn rows(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row<'_>> = Vec::new();
        for r in &self.routes {
            if r.hosts.is_empty() {
                rows.push(Row {
                    host: "*".to_owned(),
                    route: r,
                });
            }
            for h in r.hosts.iter() {
                rows.push(Row {
                    host: h.to_string(),
                    route: r,
                });
            }
        }
        rows.sort_by(|a, b| {
            (&a.host, &a.route.path, &a.route.display, &a.route.entity).cmp(&(
                &b.host,
                &b.route.path,
                &b.route.display,
                &b.route.entity,
            ))
        });
        rows
    }

    /// The route table as aligned text: one row per route and host (`*` = any host),
    /// then every annotation error, conflict and unknown principal, one per line.
    pub fn render_table(&self) -> String {
        const HEAD: [&str; 7] = [
            "HOST",
            "METHODS",
            "PATH",
            "REQUIREMENT",
            "GROUPS",
            "ENTITY",
            "OWNER",
        ];
        let cells: Vec<[String; 7]> = self.rows().iter().map(Row::cells).collect();
        let mut width = HEAD.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |row: &[&str]| {
            let mut s = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&HEAD);
        for row in &cells {
            line(&row.each_ref().map(String::as_str));
        }
        out.push_str(&format!(
            "{} routes from {} entities; unmatched requests: {}\n",
            self.route_count(),
            self.entity_count(),
            self.unmatched.as_str()
        ));
        let mut note = |text: String| {
            out.push_str(&super::lang::escaped(&text));
            out.push('\n');
        };
        self.errors.iter().for_each(|e| note(format!("error: {e}")));
        self.conflicts.iter().for_each(|c| note(c.to_string()));
        self.unknown_principals
            .iter()
            .for_each(|u| note(format!("warning: {u}")));
        out
    }

    /// The route table as JSON: `{unmatched, entities, routes: [...], errors: [...],
    /// conflicts: [...], unknown_principals: [...]}`, rows in the same order as [`Policy::render_table`].
    pub fn to_json(&self) -> Value {
        let routes: Vec<Value> = self
            .rows()
            .iter()
            .map(|row| {
                let r = row.route;
                json!({
                    "host": row.host,
                    "methods": r.methods.as_ref().map_or_else(
                        || vec!["*".to_owned()],
                        |l| l.iter().map(|m| m.to_string()).collect()),
                    "path": &*r.path,
                    "requirement": match &r.requirement {
                        super::Requirement::Public => "public",
                        super::Requirement::Authenticated => "authenticated",
                        super::Requirement::Scopes(_) => "scopes",
                    },
                    "scopes": r.required_scopes.as_deref(),
                    "groups": &*r.allowed_refs,
                    "entity": &*r.entity,
                    "owner": r.owner.as_deref(),
                    "route": &*r.display,
                })
            })
            .collect();
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|e| {
                json!({
                    "entity": e.entity,
                    "annotation": e.annotation,
                    "line": e.line,
                    "column": e.column,
                    "message": e.error.to_string(),
                    "text": e.to_string(),
                })
            })
            .collect();
        let conflicts: Vec<Value> = self
            .conflicts
            .iter()
            .map(|c| {
                json!({
                    "host": c.host.as_deref().unwrap_or("*"),
                    "method": c.method,
                    "path": c.path,
                    "entities": c.entities,
                    "under": c.under,
                })
            })
            .collect();
        let unknown: Vec<Value> = self
            .unknown_principals
            .iter()
            .map(|u| json!({"entity": u.entity, "principal": u.principal}))
            .collect();
        json!({
            "unmatched": self.unmatched.as_str(),
            "entities": self.entity_count,
            "route_count": self.route_count(),
            "routes": routes,
            "errors": errors,
            "conflicts": conflicts,
            "unknown_principals": unknown,
        })
    }
}
