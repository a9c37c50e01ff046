//! Why the core of a command that changes the cluster did not do what was asked, as a sentence
//! and a kind, so that the CLI prints the sentence and the HTTP API answers it with a status
//! code that fits (`api::actions`). The kinds are what callers branch on; nothing else is.

use std::fmt;

#[derive(Debug)]
pub enum Refused {
    /// The cluster's state (or the request's member) does not allow it: the rule's sentence.
    Precondition(String),
    /// It was asked for, but the bound passed before it happened.
    TimedOut(String),
    /// Reading or writing the store (or the like) failed.
    Failed(anyhow::Error),
}

impl Refused {
    /// A rule's refusal.
    pub fn rule(sentence: impl Into<String>) -> Refused {
        Refused::Precondition(sentence.into())
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Precondition(s) | Refused::TimedOut(s) => f.write_str(s),
            Refused::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Refused {}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Refused {
        Refused::Failed(e)
    }
}
