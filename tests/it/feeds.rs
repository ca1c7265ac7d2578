//! Small feed documents for the integration tests, built in code so a test
//! can vary one item.

pub fn rss(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>RSS Site</title><link>https://rss.example/</link>
<description>d</description>"#,
    );
    for (guid, title, body) in items {
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title>\
             <link>https://rss.example/{guid}</link><description><![CDATA[{body}]]></description>\
             <pubDate>Tue, 10 Nov 2026 10:00:00 GMT</pubDate><category>news</category></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

pub fn atom(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Site</title><id>urn:atom-site</id>
<link rel="alternate" href="https://atom.example/"/><updated>2026-11-10T10:00:00Z</updated>"#,
    );
    for (id, title, body) in items {
        s.push_str(&format!(
            "<entry><id>urn:atom:{id}</id><title>{title}</title>\
             <link rel=\"alternate\" href=\"https://atom.example/{id}\"/>\
             <updated>2026-11-10T11:00:00Z</updated><author><name>Ada</name></author>\
             <content type=\"html\">{}</content></entry>",
            body.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    s.push_str("</feed>");
    s
}

pub fn json_feed(items: &[(&str, &str, &str)]) -> String {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(id, title, body)| {
            serde_json::json!({
                "id": id, "title": title, "url": format!("https://json.example/{id}"),
                "content_html": body, "date_published": "2026-11-10T12:00:00Z"
            })
        })
        .collect();
    serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "JSON Site",
        "home_page_url": "https://json.example/",
        "items": items
    })
    .to_string()
}
