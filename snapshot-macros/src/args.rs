//! The attribute's arguments: `"operation", "entity"` then options, in any order, at most once
//! each (`id = <expr>`, `manager = <expr>`, `on_error = "fail" | "continue"`, `crate = "path"`).
//! Every mistake is a hard error placed on the offending token.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Lit, LitStr, Path, Token};

/// What to do when the snapshot cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// The body does not run; the error is returned (the default).
    Fail,
    /// Log the error and run the body.
    Continue,
}

/// Parsed `#[with_snapshot(...)]` arguments.
pub(crate) struct Args {
    pub(crate) operation: LitStr,
    pub(crate) entity: LitStr,
    pub(crate) id: Option<Expr>,
    pub(crate) manager: Option<Expr>,
    pub(crate) on_error: OnError,
    pub(crate) krate: Option<Path>,
}

const USAGE: &str = "expected `#[with_snapshot(\"<operation>\", \"<entity>\")]`, e.g. \
                     `#[with_snapshot(\"delete\", \"measure\")]`";

const OPTIONS: &str =
    "`id = <expr>`, `manager = <expr>`, `on_error = \"continue\"` or `crate = \"<path>\"`";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                format!("missing arguments: {USAGE}"),
            ));
        }
        let operation = positional(input, "operation", "\"delete\"")?;
        if input.is_empty() {
            return Err(syn::Error::new(
                operation.span(),
                format!("missing the entity type after the operation: {USAGE}"),
            ));
        }
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            return Err(syn::Error::new(
                operation.span(),
                format!("missing the entity type after the operation: {USAGE}"),
            ));
        }
        let entity = positional(input, "entity type", "\"measure\"")?;

        let mut args = Args {
            operation,
            entity,
            id: None,
            manager: None,
            on_error: OnError::Fail,
            krate: None,
        };
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break; // trailing comma
            }
            if input.peek(Lit) {
                let lit: Lit = input.parse()?;
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "unexpected argument: `#[with_snapshot]` takes the operation and the \
                         entity type, then options: {OPTIONS}"
                    ),
                ));
            }
            if !input.peek(Ident::peek_any) {
                return Err(input.error(format!("expected an option: {OPTIONS}")));
            }
            let key = input.call(Ident::parse_any)?;
            let name = key.to_string();
            if !matches!(name.as_str(), "id" | "manager" | "on_error" | "crate") {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown option `{name}`: expected {OPTIONS}"),
                ));
            }
            if seen.contains(&name) {
                return Err(syn::Error::new(
                    key.span(),
                    format!("duplicate option `{name}`: give it once"),
                ));
            }
            seen.push(name.clone());
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    key.span(),
                    format!("expected `{name} = …`"),
                ));
            }
            let eq: Token![=] = input.parse()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    eq.span,
                    format!("missing the value of `{name}`"),
                ));
            }
            match name.as_str() {
                "id" => args.id = Some(input.parse()?),
                "manager" => args.manager = Some(input.parse()?),
                "on_error" => {
                    let lit = string(input, "on_error", "\"continue\"")?;
                    args.on_error = match lit.value().as_str() {
                        "fail" => OnError::Fail,
                        "continue" => OnError::Continue,
                        other => {
                            return Err(syn::Error::new(
                                lit.span(),
                                format!(
                                    "unknown policy {other:?}: expected \"fail\" (the default: \
                                     the body does not run when the snapshot fails) or \
                                     \"continue\" (log and run the body anyway)"
                                ),
                            ));
                        }
                    };
                }
                _ => {
                    let lit = string(input, "crate", "\"snapshot\"")?;
                    let path = lit.parse::<Path>().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            format!(
                                "{:?} is not a path: expected the name under which the \
                                 `snapshot` crate is a dependency, e.g. `crate = \"snap\"`",
                                lit.value()
                            ),
                        )
                    })?;
                    args.krate = Some(path);
                }
            }
        }
        Ok(args)
    }
}

/// A non-empty string literal naming the operation or the entity type.
fn positional(input: ParseStream<'_>, what: &str, example: &str) -> syn::Result<LitStr> {
    if (input.peek(Ident::peek_any) && input.peek2(Token![=])) || input.peek(Token![,]) {
        return Err(input.error(format!("missing the {what} before the options: {USAGE}")));
    }
    let lit = string(input, what, example)?;
    let value = lit.value();
    if value.trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!("the {what} must not be empty, e.g. {example}"),
        ));
    }
    if !value.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(syn::Error::new(
            lit.span(),
            format!("the {what} needs at least one ASCII letter or digit, e.g. {example}"),
        ));
    }
    Ok(lit)
}

/// A string literal; anything else (an identifier, a number, a macro call…) is an error on it.
fn string(input: ParseStream<'_>, what: &str, example: &str) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        return input.parse();
    }
    // Consume one expression so that the error covers the whole offending argument.
    let got: Expr = input.parse()?;
    Err(syn::Error::new_spanned(
        &got,
        format!("the {what} must be a string literal, e.g. {example}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        syn::parse2(tokens)
    }

    fn err(tokens: proc_macro2::TokenStream) -> String {
        match parse(tokens) {
            Ok(_) => String::from("<parsed>"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn positional_and_options() -> syn::Result<()> {
        let a = parse(quote::quote!(
            "delete",
            "measure",
            id = m.id,
            manager = &self.snapshots,
            on_error = "continue",
            crate = "snap",
        ))?;
        assert_eq!(a.operation.value(), "delete");
        assert_eq!(a.entity.value(), "measure");
        assert!(a.id.is_some() && a.manager.is_some());
        assert_eq!(a.on_error, OnError::Continue);
        assert!(a.krate.is_some_and(|p| p.is_ident("snap")));
        let a = parse(quote::quote!("delete", "measure"))?;
        assert_eq!(a.on_error, OnError::Fail);
        assert!(a.id.is_none() && a.manager.is_none() && a.krate.is_none());
        Ok(())
    }

    #[test]
    fn every_mistake_is_an_error() {
        let cases: Vec<(proc_macro2::TokenStream, &str)> = vec![
            (quote::quote!(), "missing arguments"),
            (quote::quote!("delete"), "missing the entity type"),
            (quote::quote!("delete",), "missing the entity type"),
            (quote::quote!(delete, "measure"), "must be a string literal"),
            (quote::quote!("delete", 42), "must be a string literal"),
            (quote::quote!("", "measure"), "must not be empty"),
            (quote::quote!("delete", "  "), "must not be empty"),
            (quote::quote!("delete", "--"), "at least one ASCII letter"),
            (
                quote::quote!("delete", "measure", "x"),
                "unexpected argument",
            ),
            (quote::quote!(id = 1, "delete"), "missing the operation"),
            (
                quote::quote!("delete", "measure", ids = 1),
                "unknown option `ids`",
            ),
            (
                quote::quote!("delete", "measure", id = 1, id = 2),
                "duplicate option `id`",
            ),
            (quote::quote!("delete", "measure", id), "expected `id = …`"),
            (
                quote::quote!("delete", "measure", id =),
                "missing the value of `id`",
            ),
            (
                quote::quote!("delete", "measure", on_error = "maybe"),
                "unknown policy",
            ),
            (
                quote::quote!("delete", "measure", on_error = continue),
                "string literal",
            ),
            (
                quote::quote!("delete", "measure", crate = "a b"),
                "is not a path",
            ),
        ];
        for (tokens, want) in cases {
            let got = err(tokens.clone());
            assert!(got.contains(want), "{tokens}: {got:?} lacks {want:?}");
        }
    }
}
