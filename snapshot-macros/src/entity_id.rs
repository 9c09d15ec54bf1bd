//! Which value is recorded as the entity id.
//!
//! `id = <expr>` wins. Otherwise a parameter bound to the name `id` or `<entity>_id` (the entity
//! type in lower case, every character that cannot be in an identifier replaced by `_`:
//! `"measure"` → `measure_id`, `"land parcel"` → `land_parcel_id`) — at the top of a parameter
//! or inside a destructuring pattern. Otherwise the record has no id. Two candidates are an
//! error: the macro will not guess.

use quote::quote;
use syn::punctuated::Punctuated;
use syn::{FnArg, Ident, Pat, Token};

/// Where the id comes from.
pub(crate) enum EntityId<'a> {
    /// `id = <expr>`.
    Expr(&'a syn::Expr),
    /// A parameter (or a binding in a parameter's pattern) with this name.
    Param(Ident),
    /// No id is recorded.
    None,
}

/// `<entity>_id`, or `None` when the entity type cannot make an identifier.
pub(crate) fn param_name(entity: &str) -> Option<String> {
    let mut name: String = entity
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.push_str("_id");
    syn::parse_str::<Ident>(&name).ok().map(|_| name)
}

/// Finds the id for a call.
pub(crate) fn find<'a>(
    explicit: Option<&'a syn::Expr>,
    entity: &str,
    inputs: &Punctuated<FnArg, Token![,]>,
) -> syn::Result<EntityId<'a>> {
    if let Some(expr) = explicit {
        return Ok(EntityId::Expr(expr));
    }
    let names: Vec<String> = std::iter::once("id".to_string())
        .chain(param_name(entity))
        .collect();
    let mut found: Vec<Ident> = Vec::new();
    for input in inputs {
        if let FnArg::Typed(pat) = input {
            bindings(&pat.pat, &mut |ident| {
                let name = syn::ext::IdentExt::unraw(ident).to_string();
                if names.contains(&name) {
                    found.push(ident.clone());
                }
            });
        }
    }
    match found.len() {
        0 => Ok(EntityId::None),
        1 => Ok(EntityId::Param(found.remove(0))),
        _ => {
            let (first, last) = (&found[0], &found[found.len() - 1]);
            let listed = found
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            // Spanned from the first candidate to the last: one error covering both.
            Err(syn::Error::new_spanned(
                quote!(#first #last),
                format!(
                    "ambiguous entity id: {listed} could each be the id; say which one with \
                     `id = …`, e.g. `#[with_snapshot(\"…\", \"{entity}\", id = {first})]`"
                ),
            ))
        }
    }
}

/// Calls `f` for every identifier a pattern binds.
fn bindings(pat: &Pat, f: &mut impl FnMut(&Ident)) {
    match pat {
        Pat::Ident(p) => {
            f(&p.ident);
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, f);
            }
        }
        Pat::Type(p) => bindings(&p.pat, f),
        Pat::Reference(p) => bindings(&p.pat, f),
        Pat::Paren(p) => bindings(&p.pat, f),
        Pat::Tuple(p) => p.elems.iter().for_each(|e| bindings(e, f)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| bindings(e, f)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| bindings(e, f)),
        Pat::Struct(p) => p.fields.iter().for_each(|field| bindings(&field.pat, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn inputs(sig: syn::Signature) -> Punctuated<FnArg, Token![,]> {
        sig.inputs
    }

    fn name(id: syn::Result<EntityId<'_>>) -> String {
        match id {
            Ok(EntityId::Param(i)) => i.to_string(),
            Ok(EntityId::Expr(_)) => "<expr>".into(),
            Ok(EntityId::None) => "<none>".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn param_names() {
        assert_eq!(param_name("measure").as_deref(), Some("measure_id"));
        assert_eq!(param_name("Land parcel").as_deref(), Some("land_parcel_id"));
        assert_eq!(param_name("über").as_deref(), Some("_ber_id"));
        assert_eq!(param_name("2fa").as_deref(), None);
    }

    #[test]
    fn finds_the_id() {
        let e: syn::Expr = parse_quote!(m.id);
        let cases: Vec<(syn::Signature, Option<&syn::Expr>, &str)> = vec![
            (parse_quote!(fn f(id: i64)), None, "id"),
            (
                parse_quote!(fn f(&self, mut measure_id: i64)),
                None,
                "measure_id",
            ),
            (parse_quote!(fn f(r#id: i64)), None, "r#id"),
            (parse_quote!(fn f((id, _name): (i64, &str))), None, "id"),
            (parse_quote!(fn f(Key { id, .. }: Key)), None, "id"),
            (parse_quote!(fn f(other: i64)), None, "<none>"),
            (parse_quote!(fn f(id: i64)), Some(&e), "<expr>"),
            (
                parse_quote!(fn f(id: i64, measure_id: i64)),
                Some(&e),
                "<expr>",
            ),
        ];
        for (sig, explicit, want) in cases {
            let got = name(find(explicit, "measure", &inputs(sig.clone())));
            assert_eq!(got, want, "{}", quote!(#sig));
        }
        let sig: syn::Signature = parse_quote!(fn f(id: i64, measure_id: i64));
        let got = name(find(None, "measure", &inputs(sig)));
        assert!(
            got.contains("ambiguous entity id: `id` and `measure_id`"),
            "{got}"
        );
    }
}
