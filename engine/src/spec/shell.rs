//! A small lexer for POSIX `sh` text: for each `${...}` template in a `shell` command it
//! tells the quoting context the template stands in, so templating can pass the value as
//! data (a quoted reference to an environment variable) or refuse the position.
//!
//! It follows `sh`'s quoting rules (quotes, backslashes, `$(...)`, `${...}`, `$((...))`,
//! backticks, comments, here-documents) and tracks the words of the current simple command,
//! which is enough to see where the shell itself would run a value as code (`eval`, the
//! script of `sh -c`, a here-document read by a shell). It is not a full parser: a
//! misjudged position can at worst leave an expansion unquoted (split into words), never
//! put a value into the text the shell parses.

/// One unit of a template string: a character of the text, or the `n`-th template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Ch(char),
    Var(usize),
}

/// Where a template stands in the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// An unquoted word, whole or in part: `--lr ${v}`, `x=${v}`, `a${v}b`, `> ${v}`.
    Bare,
    /// Inside `'...'`.
    Single,
    /// Inside `"..."` (also inside `"$(...)"`'s own quotes).
    Double,
    /// In the body of a here-document with an unquoted delimiter (`<<EOF`).
    HereDoc,
    /// In a comment.
    Comment,
    /// A position where no quoting passes the value as data.
    Refused(Refusal),
}

/// Why a template's position is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Backticks,
    QuotedHereDoc,
    /// The here-document is read by this shell (or `eval`/`source`) as a script.
    ShellHereDoc(String),
    Arithmetic,
    ParamExpansion,
    DollarQuote,
    /// The simple command holds this word (`eval`, `trap`, `alias`, `let`, `[[`).
    EvalLike(String),
    /// The script argument of this shell's `-c`.
    ShellScript(String),
    Backslash,
    HereDocDelimiter,
    /// The command ends inside this construct.
    Unterminated(&'static str),
}

impl Refusal {
    /// Where the template is, for messages: "inside backticks".
    pub fn describe(&self) -> String {
        match self {
            Refusal::Backticks => "inside backticks".into(),
            Refusal::QuotedHereDoc => {
                "inside a here-document with a quoted delimiter (`<<'EOF'`), which expands nothing"
                    .into()
            }
            Refusal::ShellHereDoc(w) => {
                format!("inside a here-document that `{w}` reads as a script")
            }
            Refusal::Arithmetic => {
                "inside an arithmetic expression (`$((...))` or `((...))`)".into()
            }
            Refusal::ParamExpansion => "inside a shell parameter expansion (`$${...}`)".into(),
            Refusal::DollarQuote => "inside a `$'...'` string".into(),
            Refusal::EvalLike(w) => {
                format!("in a command with `{w}`, which evaluates its arguments as code")
            }
            Refusal::ShellScript(w) => format!("in the script of `{w} -c`, which runs it as code"),
            Refusal::Backslash => "right after a backslash".into(),
            Refusal::HereDocDelimiter => "in a here-document delimiter".into(),
            Refusal::Unterminated(what) => format!("in a command with an unterminated {what}"),
        }
    }
}

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh",
];
const EVAL_LIKE: &[&str] = &["eval", "trap", "alias", "let", "[["];
const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
];

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_shell(word: &str) -> bool {
    SHELLS.contains(&basename(word))
}

/// `-c`, `-ec`, `-xc`: a short-option cluster holding `c`.
fn is_c_flag(word: &str) -> bool {
    word.len() >= 2
        && word.starts_with('-')
        && !word.starts_with("--")
        && word[1..].chars().all(|c| c.is_ascii_alphabetic())
        && word.contains('c')
}

#[derive(Debug, Clone)]
struct HereDocSpec {
    delim: String,
    strip_tabs: bool,
    quoted: bool,
    /// The word that reads the body as a script, if any.
    consumer: Option<String>,
}

#[derive(Debug, Default)]
struct CmdFrame {
    /// Closed by `)` (a `$(...)`); the top level is not.
    subst: bool,
    parens: u32,
    /// Completed words of the current simple command (`\0` for one holding a template).
    words: Vec<String>,
    cur: String,
    in_word: bool,
    cur_var: bool,
    comment: bool,
    /// After `<<` (`Some(false)`) or `<<-` (`Some(true)`): the next word is a delimiter.
    expect_delim: Option<bool>,
    delim_quoted: bool,
    /// Here-documents whose bodies start after the next newline.
    pending: Vec<HereDocSpec>,
}

impl CmdFrame {
    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        let w = std::mem::take(&mut self.cur);
        if let Some(strip_tabs) = self.expect_delim.take() {
            let consumer = self
                .words
                .iter()
                .find(|w| is_shell(w) || ["eval", "source", "."].contains(&w.as_str()))
                .cloned();
            self.pending.push(HereDocSpec {
                delim: w,
                strip_tabs,
                quoted: self.delim_quoted,
                consumer,
            });
            self.delim_quoted = false;
        } else if is_shell(&w) {
            // `cat <<EOF | sh`: a shell on the line of a here-document may read its body.
            for p in &mut self.pending {
                p.consumer.get_or_insert_with(|| w.clone());
            }
            self.words.push(w);
        } else if !(self.words.is_empty() && RESERVED.contains(&w.as_str())) {
            self.words.push(if self.cur_var { "\0".into() } else { w });
        }
        self.in_word = false;
        self.cur_var = false;
    }

    fn end_command(&mut self) {
        self.end_word();
        self.words.clear();
    }

    /// Why a template in the word now being built may not be passed (quoting aside).
    fn refusal(&self) -> Option<Refusal> {
        if self.expect_delim.is_some() {
            return Some(Refusal::HereDocDelimiter);
        }
        if let Some(w) = self.words.iter().find(|w| EVAL_LIKE.contains(&w.as_str())) {
            return Some(Refusal::EvalLike(w.clone()));
        }
        let n = self.words.len();
        if n >= 2
            && is_c_flag(&self.words[n - 1])
            && let Some(sh) = self.words[..n - 1].iter().find(|w| is_shell(w))
        {
            return Some(Refusal::ShellScript(basename(sh).to_string()));
        }
        None
    }
}

#[derive(Debug)]
enum Frame {
    Cmd(CmdFrame),
    Single,
    Double,
    DollarSingle,
    Backtick,
    /// `${...}` of the shell; `in_double` when it stands inside `"..."`.
    Param {
        in_double: bool,
    },
    Arith {
        depth: u32,
    },
    HereDoc {
        spec: HereDocSpec,
        line_start: bool,
    },
}

struct Lexer<'a> {
    toks: &'a [Tok],
    i: usize,
    stack: Vec<Frame>,
    out: Vec<Option<Context>>,
}

/// The context of every template in `toks` (indexed by the template's number).
pub fn classify(toks: &[Tok]) -> Vec<Context> {
    let n = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Var(v) => Some(*v + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut lx = Lexer {
        toks,
        i: 0,
        stack: vec![Frame::Cmd(CmdFrame::default())],
        out: vec![None; n],
    };
    lx.run();
    let unterminated = lx.unterminated();
    let mut out: Vec<Context> = lx
        .out
        .into_iter()
        .map(|c| c.unwrap_or(Context::Bare))
        .collect();
    if let Some(what) = unterminated
        && let Some(first) = out.iter_mut().find(|c| !matches!(c, Context::Refused(_)))
    {
        *first = Context::Refused(Refusal::Unterminated(what));
    }
    out
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<Tok> {
        self.toks.get(self.i + k).copied()
    }

    fn peek_ch(&self, k: usize) -> Option<char> {
        match self.peek(k) {
            Some(Tok::Ch(c)) => Some(c),
            _ => None,
        }
    }

    /// The innermost command frame that the current word belongs to (quotes aside).
    fn cmd_mut(&mut self) -> Option<&mut CmdFrame> {
        for f in self.stack.iter_mut().rev() {
            match f {
                Frame::Single | Frame::Double => continue,
                Frame::Cmd(c) => return Some(c),
                _ => return None,
            }
        }
        None
    }

    fn cmd(&self) -> Option<&CmdFrame> {
        for f in self.stack.iter().rev() {
            match f {
                Frame::Single | Frame::Double => continue,
                Frame::Cmd(c) => return Some(c),
                _ => return None,
            }
        }
        None
    }

    fn push_word_char(&mut self, c: char) {
        if let Some(cmd) = self.cmd_mut() {
            cmd.cur.push(c);
            cmd.in_word = true;
        }
    }

    fn set(&mut self, v: usize, ctx: Context) {
        if let Some(slot) = self.out.get_mut(v) {
            *slot = Some(ctx);
        }
    }

    /// Decides a template's context from the frames around it.
    fn var(&mut self, v: usize) {
        let enclosing = self.stack.iter().find_map(|f| match f {
            Frame::Param { .. } => Some(Refusal::ParamExpansion),
            Frame::Arith { .. } => Some(Refusal::Arithmetic),
            _ => None,
        });
        let ctx = if let Some(r) = enclosing {
            Context::Refused(r)
        } else {
            match self.stack.last().expect("a frame") {
                Frame::Backtick => Context::Refused(Refusal::Backticks),
                Frame::DollarSingle => Context::Refused(Refusal::DollarQuote),
                Frame::HereDoc { spec, .. } => {
                    if spec.quoted {
                        Context::Refused(Refusal::QuotedHereDoc)
                    } else if let Some(w) = &spec.consumer {
                        Context::Refused(Refusal::ShellHereDoc(basename(w).to_string()))
                    } else {
                        Context::HereDoc
                    }
                }
                Frame::Cmd(c) if c.comment => Context::Comment,
                top => {
                    let quoting = match top {
                        Frame::Single => Context::Single,
                        Frame::Double => Context::Double,
                        _ => Context::Bare,
                    };
                    match self.cmd().and_then(CmdFrame::refusal) {
                        Some(r) => Context::Refused(r),
                        None => quoting,
                    }
                }
            }
        };
        if let Some(cmd) = self.cmd_mut() {
            cmd.in_word = true;
            cmd.cur_var = true;
        }
        self.set(v, ctx);
    }

    /// `$` at position `i` in an expanding context: pushes the construct it opens.
    /// Returns false for a plain `$`.
    fn dollar(&mut self, allow_dollar_single: bool) -> bool {
        let in_double = matches!(self.stack.last(), Some(Frame::Double));
        match (self.peek_ch(1), self.peek_ch(2)) {
            (Some('('), Some('(')) => {
                self.i += 3;
                self.stack.push(Frame::Arith { depth: 0 });
            }
            (Some('('), _) => {
                self.i += 2;
                self.stack.push(Frame::Cmd(CmdFrame {
                    subst: true,
                    ..Default::default()
                }));
            }
            (Some('{'), _) => {
                self.i += 2;
                self.stack.push(Frame::Param { in_double });
            }
            (Some('\''), _) if allow_dollar_single => {
                self.i += 2;
                self.stack.push(Frame::DollarSingle);
            }
            _ => return false,
        }
        true
    }

    fn run(&mut self) {
        while self.i < self.toks.len() {
            let tok = self.toks[self.i];
            match self.stack.last().expect("a frame") {
                Frame::Cmd(_) => self.step_cmd(tok),
                Frame::Single => match tok {
                    Tok::Ch('\'') => {
                        self.stack.pop();
                        self.i += 1;
                    }
                    Tok::Ch(c) => {
                        self.push_word_char(c);
                        self.i += 1;
                    }
                    Tok::Var(v) => {
                        self.var(v);
                        self.i += 1;
                    }
                },
                Frame::Double => self.step_double(tok),
                Frame::DollarSingle => match tok {
                    Tok::Ch('\\') => {
                        if let Some(Tok::Var(v)) = self.peek(1) {
                            self.set(v, Context::Refused(Refusal::DollarQuote));
                        }
                        self.i += 2;
                    }
                    Tok::Ch('\'') => {
                        self.stack.pop();
                        self.i += 1;
                    }
                    Tok::Ch(_) => self.i += 1,
                    Tok::Var(v) => {
                        self.var(v);
                        self.i += 1;
                    }
                },
                Frame::Backtick => match tok {
                    Tok::Ch('\\') => {
                        if let Some(Tok::Var(v)) = self.peek(1) {
                            self.set(v, Context::Refused(Refusal::Backticks));
                        }
                        self.i += 2;
                    }
                    Tok::Ch('`') => {
                        self.stack.pop();
                        self.i += 1;
                    }
                    Tok::Ch(_) => self.i += 1,
                    Tok::Var(v) => {
                        self.var(v);
                        self.i += 1;
                    }
                },
                Frame::Param { in_double } => {
                    let in_double = *in_double;
                    match tok {
                        Tok::Ch('}') => {
                            self.stack.pop();
                            self.i += 1;
                        }
                        Tok::Ch('\\') => {
                            if let Some(Tok::Var(v)) = self.peek(1) {
                                self.var(v);
                            }
                            self.i += 2;
                        }
                        Tok::Ch('\'') if !in_double => {
                            self.stack.push(Frame::Single);
                            self.i += 1;
                        }
                        Tok::Ch('"') => {
                            self.stack.push(Frame::Double);
                            self.i += 1;
                        }
                        Tok::Ch('`') => {
                            self.stack.push(Frame::Backtick);
                            self.i += 1;
                        }
                        Tok::Ch('$') => {
                            if !self.dollar(false) {
                                self.i += 1;
                            }
                        }
                        Tok::Ch(_) => self.i += 1,
                        Tok::Var(v) => {
                            self.var(v);
                            self.i += 1;
                        }
                    }
                }
                Frame::Arith { depth } => {
                    let depth = *depth;
                    match tok {
                        Tok::Ch('(') => {
                            self.stack.pop();
                            self.stack.push(Frame::Arith { depth: depth + 1 });
                            self.i += 1;
                        }
                        Tok::Ch(')') => {
                            self.stack.pop();
                            if depth > 0 {
                                self.stack.push(Frame::Arith { depth: depth - 1 });
                                self.i += 1;
                            } else {
                                self.i += if self.peek_ch(1) == Some(')') { 2 } else { 1 };
                            }
                        }
                        Tok::Ch('\\') => {
                            if let Some(Tok::Var(v)) = self.peek(1) {
                                self.var(v);
                            }
                            self.i += 2;
                        }
                        Tok::Ch('"') => {
                            self.stack.push(Frame::Double);
                            self.i += 1;
                        }
                        Tok::Ch('\'') => {
                            self.stack.push(Frame::Single);
                            self.i += 1;
                        }
                        Tok::Ch('`') => {
                            self.stack.push(Frame::Backtick);
                            self.i += 1;
                        }
                        Tok::Ch('$') => {
                            if !self.dollar(false) {
                                self.i += 1;
                            }
                        }
                        Tok::Ch(_) => self.i += 1,
                        Tok::Var(v) => {
                            self.var(v);
                            self.i += 1;
                        }
                    }
                }
                Frame::HereDoc { .. } => self.step_heredoc(tok),
            }
        }
    }

    fn step_cmd(&mut self, tok: Tok) {
        let (p1, p2) = (self.peek(1), self.peek(2));
        let ch = |t: Option<Tok>| match t {
            Some(Tok::Ch(c)) => Some(c),
            _ => None,
        };
        let Some(Frame::Cmd(cmd)) = self.stack.last_mut() else {
            unreachable!()
        };
        if cmd.comment {
            match tok {
                Tok::Ch('\n') => cmd.comment = false, // the newline is handled below
                Tok::Ch(_) => {
                    self.i += 1;
                    return;
                }
                Tok::Var(v) => {
                    self.set(v, Context::Comment);
                    self.i += 1;
                    return;
                }
            }
        }
        let c = match tok {
            Tok::Var(v) => {
                self.var(v);
                self.i += 1;
                return;
            }
            Tok::Ch(c) => c,
        };
        let mut push: Option<Frame> = None;
        match c {
            ' ' | '\t' => {
                cmd.end_word();
                self.i += 1;
            }
            '\n' => {
                cmd.end_command();
                self.i += 1;
                let pending = std::mem::take(&mut cmd.pending);
                for spec in pending.into_iter().rev() {
                    self.stack.push(Frame::HereDoc {
                        spec,
                        line_start: true,
                    });
                }
            }
            ';' | '&' | '|' => {
                cmd.end_command();
                self.i += 1;
            }
            '(' => {
                let at_start = !cmd.in_word && cmd.words.is_empty();
                cmd.end_command();
                if at_start && ch(p1) == Some('(') {
                    self.i += 2;
                    push = Some(Frame::Arith { depth: 0 });
                } else {
                    cmd.parens += 1;
                    self.i += 1;
                }
            }
            ')' => {
                cmd.end_command();
                self.i += 1;
                if cmd.parens > 0 {
                    cmd.parens -= 1;
                } else if cmd.subst {
                    self.stack.pop();
                    if let Some(outer) = self.cmd_mut() {
                        outer.in_word = true;
                    }
                }
            }
            '<' => {
                cmd.end_word();
                match (ch(p1), ch(p2)) {
                    (Some('<'), Some('<')) => self.i += 3,
                    (Some('<'), Some('-')) => {
                        cmd.expect_delim = Some(true);
                        self.i += 3;
                    }
                    (Some('<'), _) => {
                        cmd.expect_delim = Some(false);
                        self.i += 2;
                    }
                    _ => self.i += 1,
                }
            }
            '>' => {
                cmd.end_word();
                self.i += 1;
            }
            '#' if !cmd.in_word => {
                cmd.comment = true;
                self.i += 1;
            }
            '\\' => {
                self.i += 2;
                match p1 {
                    Some(Tok::Ch('\n')) => {}
                    Some(Tok::Var(v)) => {
                        cmd.cur_var = true;
                        cmd.in_word = true;
                        self.set(v, Context::Refused(Refusal::Backslash));
                    }
                    Some(Tok::Ch(n)) => {
                        if cmd.expect_delim.is_some() {
                            cmd.delim_quoted = true;
                        }
                        cmd.cur.push(n);
                        cmd.in_word = true;
                    }
                    None => {}
                }
            }
            '\'' | '"' => {
                cmd.in_word = true;
                if cmd.expect_delim.is_some() {
                    cmd.delim_quoted = true;
                }
                self.i += 1;
                push = Some(if c == '\'' {
                    Frame::Single
                } else {
                    Frame::Double
                });
            }
            '`' => {
                cmd.in_word = true;
                self.i += 1;
                push = Some(Frame::Backtick);
            }
            '$' => {
                cmd.in_word = true;
                if !self.dollar(true) {
                    self.push_word_char('$');
                    self.i += 1;
                }
            }
            c => {
                cmd.cur.push(c);
                cmd.in_word = true;
                self.i += 1;
            }
        }
        if let Some(f) = push {
            self.stack.push(f);
        }
    }

    fn step_double(&mut self, tok: Tok) {
        match tok {
            Tok::Ch('"') => {
                self.stack.pop();
                self.i += 1;
            }
            Tok::Ch('\\') => match self.peek(1) {
                Some(Tok::Var(v)) => {
                    self.set(v, Context::Refused(Refusal::Backslash));
                    self.i += 2;
                }
                Some(Tok::Ch(n)) if "$`\"\\\n".contains(n) => {
                    self.push_word_char(n);
                    self.i += 2;
                }
                _ => {
                    self.push_word_char('\\');
                    self.i += 1;
                }
            },
            Tok::Ch('`') => {
                self.stack.push(Frame::Backtick);
                self.i += 1;
            }
            Tok::Ch('$') => {
                if !self.dollar(false) {
                    self.push_word_char('$');
                    self.i += 1;
                }
            }
            Tok::Ch(c) => {
                self.push_word_char(c);
                self.i += 1;
            }
            Tok::Var(v) => {
                self.var(v);
                self.i += 1;
            }
        }
    }

    fn step_heredoc(&mut self, tok: Tok) {
        let Some(Frame::HereDoc { spec, line_start }) = self.stack.last_mut() else {
            unreachable!()
        };
        if *line_start {
            *line_start = false;
            // The delimiter line: literal text only (a template never ends a body).
            let mut line = String::new();
            let mut j = self.i;
            let mut literal = true;
            while let Some(t) = self.toks.get(j) {
                match t {
                    Tok::Ch('\n') => break,
                    Tok::Ch(c) => line.push(*c),
                    Tok::Var(_) => literal = false,
                }
                j += 1;
            }
            let line = if spec.strip_tabs {
                line.trim_start_matches('\t')
            } else {
                &line
            };
            if literal && line == spec.delim {
                self.stack.pop();
                self.i = j + 1;
                if let Some(Frame::HereDoc { line_start, .. }) = self.stack.last_mut() {
                    *line_start = true;
                }
                return;
            }
        }
        let quoted = spec.quoted;
        match tok {
            Tok::Ch('\n') => {
                *line_start = true;
                self.i += 1;
            }
            Tok::Var(v) => {
                self.var(v);
                self.i += 1;
            }
            Tok::Ch(_) if quoted => self.i += 1,
            Tok::Ch('\\') => match self.peek(1) {
                Some(Tok::Var(v)) => {
                    self.set(v, Context::Refused(Refusal::Backslash));
                    self.i += 2;
                }
                Some(Tok::Ch(n)) if "$`\\\n".contains(n) => self.i += 2,
                _ => self.i += 1,
            },
            Tok::Ch('`') => {
                self.stack.push(Frame::Backtick);
                self.i += 1;
            }
            Tok::Ch('$') => {
                if !self.dollar(false) {
                    self.i += 1;
                }
            }
            Tok::Ch(_) => self.i += 1,
        }
    }

    /// The construct the text ends in, if it is not closed (a here-document may end at the
    /// end of the text).
    fn unterminated(&self) -> Option<&'static str> {
        let open: Vec<&Frame> = self
            .stack
            .iter()
            .filter(|f| !matches!(f, Frame::HereDoc { .. }))
            .collect();
        match open.last()? {
            Frame::Cmd(c) if !c.subst => None,
            Frame::Cmd(_) => Some("`$(`"),
            Frame::Single => Some("`'`"),
            Frame::Double => Some("`\"`"),
            Frame::DollarSingle => Some("`$'`"),
            Frame::Backtick => Some("backtick"),
            Frame::Param { .. } => Some("`${`"),
            Frame::Arith { .. } => Some("`$((`"),
            Frame::HereDoc { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `@` marks a template.
    fn ctx(text: &str) -> Vec<Context> {
        let mut n = 0;
        let toks: Vec<Tok> = text
            .chars()
            .map(|c| {
                if c == '@' {
                    n += 1;
                    Tok::Var(n - 1)
                } else {
                    Tok::Ch(c)
                }
            })
            .collect();
        classify(&toks)
    }

    use Context::*;

    #[test]
    fn quoting_contexts() {
        assert_eq!(ctx("echo @ a@b x=@ > @"), vec![Bare, Bare, Bare, Bare]);
        assert_eq!(
            ctx("echo '@' 'a@b' \"@\" \"a'@'b\""),
            vec![Single, Single, Double, Double]
        );
        assert_eq!(
            ctx("echo \"$(printf %s @ \"@\")\" '\"@'"),
            vec![Bare, Double, Single]
        );
        assert_eq!(
            ctx("echo 'it''s' @ # note @\necho @"),
            vec![Bare, Comment, Bare]
        );
        assert_eq!(ctx("echo a#@"), vec![Bare]);
        assert_eq!(ctx("echo \\\\@ \"\\\"@\""), vec![Bare, Double]);
    }

    #[test]
    fn here_documents() {
        assert_eq!(ctx("cat > o <<EOF\n@\nEOF\necho @"), vec![HereDoc, Bare]);
        assert_eq!(
            ctx("cat <<-EOF >o; echo @\n\t@ '\"\n\tEOF\n@"),
            vec![Bare, HereDoc, Bare]
        );
        assert_eq!(
            ctx("cat <<'EOF'\n@\nEOF"),
            vec![Refused(Refusal::QuotedHereDoc)]
        );
        assert_eq!(
            ctx("cat <<\\EOF\n@\nEOF"),
            vec![Refused(Refusal::QuotedHereDoc)]
        );
        assert_eq!(
            ctx("cat <<A <<'B'\n@\nA\n@\nB\n@"),
            vec![HereDoc, Refused(Refusal::QuotedHereDoc), Bare]
        );
        assert_eq!(ctx("cat <<E\nx $(echo @) \"@\"\nE"), vec![Bare, HereDoc]);
        assert_eq!(ctx("cat <<<@"), vec![Bare]);
        assert_eq!(
            ctx("sh <<EOF\n@\nEOF"),
            vec![Refused(Refusal::ShellHereDoc("sh".into()))]
        );
        assert_eq!(
            ctx("cat <<EOF | /bin/bash\n@\nEOF"),
            vec![Refused(Refusal::ShellHereDoc("bash".into()))]
        );
        assert_eq!(
            ctx("cat <<@\nx\n"),
            vec![Refused(Refusal::HereDocDelimiter)]
        );
    }

    #[test]
    fn refused_positions() {
        assert_eq!(ctx("echo `echo @`"), vec![Refused(Refusal::Backticks)]);
        assert_eq!(ctx("echo \"`echo @`\""), vec![Refused(Refusal::Backticks)]);
        assert_eq!(ctx("echo $((@ + 1))"), vec![Refused(Refusal::Arithmetic)]);
        assert_eq!(
            ctx("(( x = @ )); echo @"),
            vec![Refused(Refusal::Arithmetic), Bare]
        );
        assert_eq!(
            ctx("echo ${X:-@} @"),
            vec![Refused(Refusal::ParamExpansion), Bare]
        );
        assert_eq!(
            ctx("echo \"${X:-\"@\"}\""),
            vec![Refused(Refusal::ParamExpansion)]
        );
        assert_eq!(ctx("echo $'@'"), vec![Refused(Refusal::DollarQuote)]);
        assert_eq!(
            ctx("eval \"x=@\"; echo @"),
            vec![Refused(Refusal::EvalLike("eval".into())), Bare]
        );
        assert_eq!(
            ctx("if [[ @ -eq 1 ]]; then trap 'rm @' EXIT; fi"),
            vec![
                Refused(Refusal::EvalLike("[[".into())),
                Refused(Refusal::EvalLike("trap".into()))
            ]
        );
        assert_eq!(
            ctx("timeout 5 bash -ec \"echo @\" _ @"),
            vec![Refused(Refusal::ShellScript("bash".into())), Bare]
        );
        assert_eq!(ctx("echo \\@"), vec![Refused(Refusal::Backslash)]);
        assert_eq!(ctx("echo \"\\@\""), vec![Refused(Refusal::Backslash)]);
        assert_eq!(
            ctx("echo @ 'oops"),
            vec![Refused(Refusal::Unterminated("`'`"))]
        );
        assert_eq!(
            ctx("echo $(echo @"),
            vec![Refused(Refusal::Unterminated("`$(`"))]
        );
    }

    #[test]
    fn nesting_ends_where_sh_ends_it() {
        assert_eq!(ctx("echo $(echo ')' @) @"), vec![Bare, Bare]);
        assert_eq!(ctx("echo \"$(echo \")\" @)\" \"@\""), vec![Bare, Double]);
        assert_eq!(ctx("echo $(( (1) )) @ ${X} @"), vec![Bare, Bare]);
        assert_eq!(ctx("(cd x && echo @) ; echo '@'"), vec![Bare, Single]);
        assert_eq!(ctx("echo ${X:-'}'} @"), vec![Bare]);
    }
}
