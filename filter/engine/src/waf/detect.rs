//! Built-in detectors for SQL injection, XSS, path traversal and command injection.
//!
//! Each is a small set of linear-time patterns over a normalised copy of the value
//! (lower case, SQL comments as spaces, whitespace runs as one space), compiled once into
//! one `RegexSet` per detector, behind a cheap byte prefilter: most values (words,
//! numbers, ids) have none of the characters any attack needs and are never scanned.
//! The patterns look for the syntax an injection must use to break out of its context
//! (a quote then a boolean and a comparison, a statement after `;`, a tag with an event
//! handler, a separator then a shell command with arguments) rather than for keywords,
//! which ordinary text is full of.

use regex::bytes::{RegexSet, RegexSetBuilder};

use super::document::WafDetector;
use super::transform;

const SQLI: &[&str] = &[
    // UNION-based: UNION [ALL|DISTINCT] [(] SELECT
    r"\bunion(?:\s+(?:all|distinct))?\s*\(*\s*select\b",
    // SELECT with a column list typical of injected queries, then FROM
    r"\bselect\s+(?:top\s+\d+\s+)?(?:\*|@@?[a-z_]+|distinct\b|[a-z_][\w.$]*\s*\(|(?:[\w.$`\x22\[\]]+\s*,\s*)+[\w.$`\x22\[\]]+\s+from\b)",
    r"\bselect\b[^;]*?\bfrom\s+[\w.`\x22\[\]]+\s*(?:where|limit|order\s+by|group\s+by|having|union|--|#|;|\)|$)",
    r"\bselect\b[^;]*?\bfrom\s+(?:information_schema|mysql\.|sys\.|sysobjects|syscolumns|pg_|dual\b|users?\b)",
    // quote, then a boolean operator and a comparison (tautologies: ' or '1'='1)
    r#"['"`)]\s*(?:or|and|xor|\|\||&&|div)\s*[\w'"`(\-+.]*\s*(?:=|<>|!=|<=?|>=?|\blike\b|\bis\b|\bin\s*\(|\bregexp\b|\brlike\b|\bbetween\b|\bsounds\s+like\b)"#,
    r#"['"`)]\s*(?:or|and|xor|\|\||&&)\s+(?:not\s+)?(?:true|false|null|\d+)\s*(?:--|#|;|/\*|$)"#,
    // number, boolean, numeric comparison: 1 OR 1=1
    r"(?:^|[\s(=])-?\d+\s*\)*\s*(?:or|and|xor|\|\||&&)\s+['\x22]?-?\d+['\x22]?\s*(?:=|<>|!=|<=?|>=?)\s*['\x22]?-?\d+",
    r"\b(?:or|and)\s+['\x22]?(\w+)['\x22]?\s*=\s*['\x22]?(\w+)['\x22]?\s*(?:--|#|;|/\*|$)",
    // quote or number, then a comment or a statement terminator
    r#"['"`]\s*\)*\s*(?:--(?:\s|$|-)|#|/\*|;\s*(?:--|#|$))"#,
    r#"(?:^|\s)-?\d+\s*\)*\s*(?:--\s*$|#\s*$|;\s*--)"#,
    // a quote, a few more tokens, then a comment that ends the value: x'-email--
    r#"['"`][^'"`]*--\s*$"#,
    // stacked statements
    r"(?:^|[;'\x22)])\s*;?\s*(?:drop|truncate|alter|create)\s+(?:table|database|schema|user|procedure|function|view|index)\b",
    r"[;'\x22)]\s*(?:insert\s+into|delete\s+from|update\s+[\w.`\x22\[\]]+\s+set|exec(?:ute)?\s+(?:master\.|xp_|sp_|\w+\s*@|\()|declare\s+@|shutdown\b|waitfor\s+delay|select\b|grant\s|revoke\s|load\s+data|copy\s+\w+\s+(?:from|to)\b)",
    // functions typical of blind and error-based injection
    r"\b(?:sleep|benchmark|pg_sleep|extractvalue|updatexml|load_file|group_concat|make_set|elt|geometrycollection|multipoint|polygon|linestring|exp|floor\s*\(\s*rand|name_const|json_keys|dbms_pipe\.receive_message|utl_inaddr\.get_host_\w+|utl_http\.request|dbms_xmlgen\.\w+|ctxsys\.drithsx\.sn|xp_cmdshell|xp_dirtree|xp_regread|sp_oacreate|sp_executesql|sp_password|openrowset|opendatasource|sysdate|randomblob|sqlite_version|pg_read_file|lo_import|current_setting|char|chr|concat(?:_ws)?|substr(?:ing)?|ascii|ord|hex|unhex|mid|version|database|user|schema|if|ifnull|isnull|coalesce|cast|convert)\s*\((?:[^()]*\(){0,2}[^()]*\)\s*(?:[=<>,)]|[-+*/|]|--|#|;|$|\b(?:and|or|from|union|select|like|is|in)\b)",
    r"\b(?:sleep|benchmark|pg_sleep|waitfor\s+delay|load_file|xp_cmdshell|dbms_pipe\.receive_message|utl_inaddr|extractvalue|updatexml)\s*[\('\x22]",
    r"@@(?:version|datadir|hostname|basedir|tmpdir|servername|identity)\b",
    r"\binformation_schema\b|\bmysql\.user\b|\bsys\.(?:tables|objects|columns|databases)\b|\bsysobjects\b|\bpg_(?:catalog|shadow|user|tables)\b|\bsqlite_master\b|\ball_tables\b|\buser_tables\b",
    r"\binto\s+(?:out|dump)file\b",
    r"\border\s+by\s+\d+\s*(?:--|#|;|/\*|$|,\s*\d)",
    r"\bhaving\s+['\x22]?\d+['\x22]?\s*[=<>]",
    r"\bgroup\s+by\s+[\w.]+\s+having\b",
    r#"['"]\s*(?:\|\||\+|&)\s*\(?\s*(?:select|sleep|chr|char|concat)\b"#,
    r"\bcase\s+when\s[^;]*?\bthen\b[^;]*?\b(?:else|end)\b",
    r"(?:^|[\s('\x22])(?:and|or)\s+\d+\s*(?:=|<|>)\s*\(\s*select\b",
    r#"['"]\s*(?:and|or)\s+\(?\s*select\b"#,
    r"\blike\s+['\x22]%",
    r#"^\s*['"`]\s*(?:or|and|;|\)|--|#|/\*|\|\||&&|=|<|>|\+|union|select)"#,
    r"\bwaitfor\s+(?:delay|time)\s+['\x22]",
    r"\bexec(?:ute)?\s*\(\s*@",
    r"\bnull\s*,\s*null\b",
    r"\bproc(?:edure)?\s+analyse\s*\(",
    r"\bselect\s+(?:\d+|null|'[^']*'|char\s*\(\d)",
];

const XSS: &[&str] = &[
    r"<\s*/?\s*script\b",
    r"<[a-z][\w:-]*\b[^>]*?[\s/\x22'`]on[a-z]{3,}\s*=",
    r#"(?:^|[\s\x22'`;/])on(?:abort|activate|afterprint|animation\w+|auxclick|beforeprint|beforeunload|begin|blur|cancel|canplay\w*|change|click|close|contextmenu|copy|cut|dblclick|drag\w*|drop|durationchange|end|ended|error|focus\w*|formdata|hashchange|input|invalid|key(?:down|press|up)|load\w*|message|mouse\w+|paste|pause|play\w*|pointer\w+|popstate|progress|readystatechange|repeat|reset|resize|scroll\w*|search|seek\w*|select\w*|show|start|submit|toggle|touch\w+|transition\w+|unload|wheel|zoom)\s*=\s*[\x22'`]?\s*[\w$(\[]"#,
    r"(?:javascript|vbscript|livescript|mocha)\s*:",
    r"data\s*:\s*(?:text/html|image/svg\+xml|application/(?:x-)?javascript)",
    r"<\s*(?:iframe|frame|frameset|object|embed|applet|svg|math|meta|base|link|style|form|isindex|xml|xss|import|template|portal|video|audio|source|image|img|body|html|input|button|details|marquee|bgsound|layer|ilayer|animate|set|handler|listener|vmlframe)\b[^>]*?(?:>|\s(?:src|href|data|action|formaction|content|xlink:href|srcdoc|background|dynsrc|lowsrc|style|values|to|from|attributename|code|codebase|classid)\s*=)",
    r"\b(?:alert|prompt|confirm|eval|settimeout|setinterval|execscript|msgbox)\s*(?:\(|`|&#)",
    r"\b(?:document|window|top|self|parent|frames)\s*(?:\.\s*|\[\s*['\x22])(?:cookie|location|domain|write(?:ln)?|open|localstorage|sessionstorage|body|head)\b",
    r"\bstring\s*\.\s*fromcharcode\s*\(|\batob\s*\(|\bconstructor\s*\(|\bfunction\s*\(\s*\)\s*\{",
    r"\bexpression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*url|@import\s",
    r"<!\[cdata\[|<!entity|<!doctype\s+\w+\s*\[",
    r"\{\{.*?(?:constructor|\$on|\$eval|alert|\$\{).*?\}\}",
];

const TRAVERSAL: &[&str] = &[
    r"(?:^|[/\\=\s'\x22:;,|])\.{2,3}[/\\]",
    r"[/\\]\.{2,3}(?:[/\\]|$|;|%00|\x00)",
    r"\.\.;[/\\]",
    r"(?:^|[/\\\s=:'\x22])(?:etc[/\\](?:passwd|shadow|group|hosts|issue|motd|sudoers|crontab|fstab|mysql|apache2|nginx|ssh)\b|proc[/\\](?:self|\d+)[/\\]|windows[/\\](?:win\.ini|system32|system\.ini)|boot\.ini|winnt[/\\]|inetpub[/\\]|web-inf[/\\]|meta-inf[/\\]|\.ssh[/\\]|\.aws[/\\]credentials|\.git[/\\](?:config|head)|\.htpasswd|\.htaccess|\.env\b|wp-config\.php|var[/\\]log[/\\])",
    r"^(?:file|php|phar|zip|data|expect|glob|jar|netdoc|gopher|dict|ldap|tftp)://",
];

const SHELL_COMMANDS: &str = "(?:cat|tac|nl|ls|dir|id|whoami|uname|hostname|ifconfig|ipconfig|netstat|wget|curl|fetch|lwp-download|nc|ncat|netcat|socat|telnet|ssh|scp|ftp|tftp|bash|sh|zsh|ksh|csh|tcsh|dash|ash|python[23]?|perl|ruby|php|node|lua|ping|nslookup|dig|host|traceroute|chmod|chown|chgrp|rm|mv|cp|mkdir|echo|printf|kill|killall|pkill|ps|env|printenv|set|export|awk|gawk|sed|base64|xxd|od|head|tail|more|less|find|grep|egrep|locate|sleep|touch|mkfifo|openssl|useradd|usermod|passwd|shutdown|reboot|crontab|nohup|sudo|su|eval|exec|systeminfo|tasklist|taskkill|net|powershell|pwsh|cmd|certutil|bitsadmin|wmic|reg|type|copy|del|rundll32|regsvr32|mshta|cscript|wscript|time|sort|xargs|tee|timeout|dd|tar|zip|unzip|gzip|gunzip|mail|sendmail|finger|who|w|last|uptime|df|du|mount|getent|iptables|systemctl|service|java|javac|gcc|cc|make)";

fn command_patterns() -> Vec<String> {
    let c = SHELL_COMMANDS;
    vec![
        // separator, command, then an argument or the end
        format!(
            r#"(?:[;&|\n`]|\$\(|\|\||&&)\s*(?:\w+=\S*\s+)?(?:sudo\s+)?(?:(?:/usr)?(?:/local)?/s?bin/)?{c}(?:\.exe)?(?:\s*$|\s*[;&|`)<>]|\s+[-/.$~'"\\{{@]|\$\{{?ifs|[<>]|\$\{{\w)"#
        ),
        // command substitution
        format!(r"\$\(\s*(?:(?:/usr)?/s?bin/)?{c}\b"),
        format!(r"`\s*(?:(?:/usr)?/s?bin/)?{c}\b[^`]*`"),
        // absolute paths to shells and tools
        r"(?:^|[\s;&|`'\x22(=])/(?:usr/)?(?:local/)?s?bin/(?:ba|z|k|c|tc|da)?sh\b".to_string(),
        r"(?:^|[\s;&|`'\x22(=])/(?:usr/)?(?:local/)?s?bin/\w+\s+-".to_string(),
        r"\$\{?ifs\b|\$\{?ifs\}|\$\{?path:|\$\{?home:|\$\{?shell\b".to_string(),
        r"/dev/(?:tcp|udp)/".to_string(),
        r"\b(?:nc|ncat|netcat)(?:\.exe)?\s+(?:-\w*[elc]|\S+\s+\d+\s*[<|-])".to_string(),
        r"\b(?:ba|z)?sh\s+-[ic]\b|\bcmd(?:\.exe)?\s+/[ck]\b|\bpowershell(?:\.exe)?\s+[-/](?:e|enc|encodedcommand|c|command|nop|w|exec)\b".to_string(),
        r"\b(?:wget|curl)\s+(?:-\S+\s+)*(?:https?|ftp)://".to_string(),
        r"\bchmod\s+[0-7+]\w*\s".to_string(),
        r"(?:^|[\s;&|])(?:rm\s+-[rf]{1,2}\s+/|mkfifo\s+/tmp/|>\s*/tmp/\w)".to_string(),
    ]
}

/// Characters at least one pattern of each detector needs; values without any skip it.
/// Byte tables, so the check is one lookup per byte.
const SQLI_NEEDS: &[bool; 256] = &table(b"'\"`;#()=<>-@|&*, ");
const XSS_NEEDS: &[bool; 256] = &table(b"<:(=`&{[");
const TRAVERSAL_NEEDS: &[bool; 256] = &table(b"/\\:");
const COMMAND_NEEDS: &[bool; 256] = &table(b";&|`$/\n");

const fn table(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

/// The compiled detectors, built once per policy.
#[derive(Debug)]
pub struct Detectors {
    sqli: RegexSet,
    xss: RegexSet,
    traversal: RegexSet,
    command: RegexSet,
}

fn build(patterns: &[impl AsRef<str>]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(false)
        .unicode(false)
        .size_limit(8 << 20)
        .dfa_size_limit(2 << 20)
        .build()
}

impl Detectors {
    pub fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            sqli: build(SQLI)?,
            xss: build(XSS)?,
            traversal: build(TRAVERSAL)?,
            command: build(&command_patterns())?,
        })
    }

    /// Whether `detector` finds an attack in `value` (already transformed by the rule).
    pub fn detect(&self, detector: WafDetector, value: &[u8]) -> bool {
        match detector {
            WafDetector::InvalidUrlEncoding => invalid_url_encoding(value),
            WafDetector::Sqli => self.check(&self.sqli, SQLI_NEEDS, value, true),
            WafDetector::Xss => self.check(&self.xss, XSS_NEEDS, value, false),
            WafDetector::PathTraversal => {
                self.check(&self.traversal, TRAVERSAL_NEEDS, value, false)
            }
            WafDetector::CommandInjection => {
                self.check(&self.command, COMMAND_NEEDS, value, false)
                    || (value.iter().any(|b| SHELL_NOISE.contains(b))
                        && self.check(&self.command, COMMAND_NEEDS, &shell_unquote(value), false))
            }
        }
    }

    fn check(&self, set: &RegexSet, needs: &[bool; 256], value: &[u8], sql: bool) -> bool {
        if value.len() < 2 || !value.iter().any(|b| needs[usize::from(*b)]) {
            return false;
        }
        // Borrowed all the way for the common value: already lower case, single spaces.
        let lower: std::borrow::Cow<'_, [u8]> = if transform::has_uppercase(value) {
            std::borrow::Cow::Owned(value.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(value)
        };
        if sql {
            let without = transform::remove_comments(&lower);
            set.is_match(&transform::compress_whitespace(&without))
        } else {
            set.is_match(&transform::compress_whitespace(&lower))
        }
    }
}

/// Characters a shell drops inside a word (`c''at`, `c\at`, `c$@at`, `c^at` in cmd).
const SHELL_NOISE: &[u8] = b"'\"\\^$";

/// The word as the shell would see it: quotes, backslashes, carets and empty
/// expansions (`$@`, `$*`, `$!`) removed, so `c$@at /e\tc/pa''sswd` reads `cat /etc/passwd`.
fn shell_unquote(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        match b {
            b'\'' | b'"' | b'\\' | b'^' => {}
            b'$' if matches!(value.get(i + 1), Some(b'@' | b'*' | b'!')) => i += 1,
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// A `%` not followed by two hex digits, or `%u` by four.
pub fn invalid_url_encoding(value: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = value
        .get(i..)
        .and_then(|rest| rest.iter().position(|b| *b == b'%'))
    {
        let at = i + p;
        let hex2 = |k: usize| {
            value.get(k).is_some_and(u8::is_ascii_hexdigit)
                && value.get(k + 1).is_some_and(u8::is_ascii_hexdigit)
        };
        let ok = hex2(at + 1)
            || (matches!(value.get(at + 1), Some(b'u' | b'U')) && hex2(at + 2) && hex2(at + 4));
        if !ok {
            return true;
        }
        i = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Detectors {
        Detectors::new().unwrap()
    }

    #[test]
    fn sqli_attacks_and_text() {
        let d = d();
        for attack in [
            "1234 OR 1=1",
            "-1839' or '1'='1",
            "1' UNION SELECT username, password FROM users--",
            "x'; DROP TABLE users; --",
            "1 AND SLEEP(5)",
            "admin'--",
            "1/**/union/**/select/**/1,2,3",
            "' or 1=1#",
            "1; exec master..xp_cmdshell 'dir'",
            "SELECT * FROM users WHERE id=1",
        ] {
            assert!(d.detect(WafDetector::Sqli, attack.as_bytes()), "{attack}");
        }
        for text in [
            "Please select one option from the list below",
            "I'd like to know when my refund arrives (it's been 3 weeks)",
            "Tom & Jerry; rock and roll",
            "Wie lange dauert die Bearbeitung meiner Steuererklärung?",
            "Order by phone: 555-1234",
            "Let's meet at 10 -- or maybe 11?",
            "\"apples\" or \"pears\"",
            "price >= 100 and <= 200",
            "She said: don't do it; it's not worth it",
        ] {
            assert!(!d.detect(WafDetector::Sqli, text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn xss_traversal_command() {
        let d = d();
        assert!(d.detect(WafDetector::Xss, b"<script>alert(1)</script>"));
        assert!(d.detect(WafDetector::Xss, b"<img src=x onerror=alert(1)>"));
        assert!(d.detect(WafDetector::Xss, b"\" onmouseover=\"alert(1)"));
        assert!(d.detect(WafDetector::Xss, b"javascript:alert(1)"));
        assert!(!d.detect(WafDetector::Xss, b"x < 3 and y > 4: compare them"));
        assert!(!d.detect(
            WafDetector::Xss,
            b"Read the docs: https://example.com/a?b=c"
        ));
        assert!(d.detect(WafDetector::PathTraversal, b"../../etc/passwd"));
        assert!(d.detect(WafDetector::PathTraversal, b"..\\..\\windows\\win.ini"));
        assert!(!d.detect(WafDetector::PathTraversal, b"/v1/refunds/u1"));
        assert!(!d.detect(WafDetector::PathTraversal, b"wait... ok/fine"));
        assert!(d.detect(WafDetector::CommandInjection, b"; cat /etc/passwd"));
        assert!(d.detect(WafDetector::CommandInjection, b"x|id"));
        assert!(d.detect(WafDetector::CommandInjection, b"$(whoami)"));
        assert!(!d.detect(
            WafDetector::CommandInjection,
            b"Tom & Jerry; cat food is tasty"
        ));
        assert!(!d.detect(WafDetector::CommandInjection, b"R&D / sales"));
        assert!(d.detect(WafDetector::CommandInjection, b"x;c$@at /e\\tc/pa''sswd"));
        assert!(!d.detect(
            WafDetector::CommandInjection,
            b"O'Reilly & Sons; \"cat\" food"
        ));
    }

    #[test]
    fn url_encoding_validity() {
        assert!(invalid_url_encoding(b"%zz"));
        assert!(invalid_url_encoding(b"abc%4"));
        assert!(!invalid_url_encoding(b"a%20b%u0041"));
    }
}
