//! A plain table rendered as Markdown, CSV or HTML.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Md,
    Csv,
    Html,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!(
            "| {} |\n",
            self.headers
                .iter()
                .map(|h| cell(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        out.push_str(&format!(
            "|{}|\n",
            vec!["---"; self.headers.len()].join("|")
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "| {} |\n",
                r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
            ));
        }
        out
    }

    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.headers)?;
        for r in &self.rows {
            w.write_record(r)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
        Ok(String::from_utf8(bytes)?)
    }

    pub fn to_html(&self, title: &str) -> String {
        let mut out = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}\
             th,td{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}}</style></head>\
             <body><h1>{t}</h1>\n<table>\n<thead><tr>",
            t = escape(title)
        );
        for h in &self.headers {
            out.push_str(&format!("<th scope=\"col\">{}</th>", escape(h)));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                out.push_str(&format!("<td>{}</td>", escape(c)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table></body></html>\n");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_in_every_format() {
        let t = Table {
            headers: vec!["a".into(), "b".into()],
            rows: vec![vec!["x|y".into(), "<b>\"q\", z".into()]],
        };
        assert!(t.to_markdown().contains("x\\|y"));
        assert!(t.to_html("T").contains("&lt;b&gt;&quot;q&quot;, z"));
        let csv = t.to_csv().unwrap();
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[1], "<b>\"q\", z");
    }
}
