//! The error context: collects every attribute mistake so that all of them
//! are reported at once, each with its own span.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Collects errors while a struct is parsed and checked.
///
/// It must end with [`Ctxt::check`], which consumes it and returns the
/// errors. A context dropped without `check` is a bug in this crate (the
/// errors it holds would be lost and a broken struct would expand), so
/// dropping it unchecked panics; inside the derive that panic becomes a
/// compile error pointing at the bug rather than silently accepted input.
#[must_use = "a Ctxt must end with `check()`, or its errors are lost"]
pub(crate) struct Ctxt {
    /// `None` once `check` has taken the errors.
    errors: Option<Vec<syn::Error>>,
}

impl Ctxt {
    /// An empty context.
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: Some(Vec::new()),
        }
    }

    /// An error spanning the tokens of `span`.
    pub(crate) fn error(&mut self, span: impl ToTokens, msg: impl Display) {
        self.push(syn::Error::new_spanned(span, msg));
    }

    /// An error at `span`.
    pub(crate) fn error_at(&mut self, span: Span, msg: impl Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// An error syn produced (a parse error).
    pub(crate) fn push(&mut self, e: syn::Error) {
        // `errors` is `None` only inside `check`, which consumes `self`.
        if let Some(errors) = &mut self.errors {
            errors.push(e);
        }
    }

    /// Ends the context: `Ok` without errors, otherwise every error combined
    /// into one, in the order they were found.
    pub(crate) fn check(mut self) -> syn::Result<()> {
        let mut iter = self.errors.take().unwrap_or_default().into_iter();
        match iter.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in iter {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

impl Drop for Ctxt {
    // A bug guard of the derive, not a path user input can reach: every
    // `Ctxt` the derive creates ends with `check()`. In a proc macro the panic
    // is reported as a compile error naming it. (Not while already panicking,
    // which would abort and hide the first panic.)
    #[allow(clippy::panic)]
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("rowseal-derive bug: an error context was dropped without check()");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_without_errors_is_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    fn check_combines_every_error_in_order() {
        let mut cx = Ctxt::new();
        cx.error_at(Span::call_site(), "first");
        cx.push(syn::Error::new(Span::call_site(), "second"));
        cx.error(quote::quote!(x), "third");
        let msgs: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(msgs, ["first", "second", "third"]);
    }

    #[test]
    #[should_panic(expected = "dropped without check()")]
    fn dropping_an_unchecked_context_panics() {
        let mut cx = Ctxt::new();
        cx.error_at(Span::call_site(), "lost");
        drop(cx);
    }

    #[test]
    #[should_panic(expected = "dropped without check()")]
    fn dropping_an_unchecked_empty_context_panics_too() {
        let _cx = Ctxt::new();
    }
}
