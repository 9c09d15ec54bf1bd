//! Code generation. The signature and the attributes are re-emitted untouched; the body is
//! carried as tokens (never parsed, so a broken body gets rustc's own errors) and wrapped:
//!
//! ```text
//! fn f(..) -> R {
//!     #![inner attributes]
//!     __private::run::<R, _>(
//!         __private::begin(manager, call, || id),   // the snapshot (Err: fail closed)
//!         move || { body },                          // runs only after a snapshot; its Ok/Err
//!         __private::fail_closed::<R>(),             // becomes the outcome
//!     )
//! }
//! ```
//!
//! An `async fn` awaits `__private::run_async(__private::begin_async(..), async move { body }, ..)`.
//! The body runs in a closure (or an async block) so that its `return` and `?` are observed.
//! Every path is absolute (`::snapshot::__private::…`, or the `crate = "…"` path) and no local
//! is introduced, so nothing can clash with the body's names.

use proc_macro2::{Delimiter, Group, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::token::Brace;
use syn::{Attribute, ReturnType, Signature, Type, Visibility};

use crate::args::{Args, OnError};
use crate::entity_id::{self, EntityId};

/// A function whose body is kept as tokens.
pub(crate) struct MaybeItemFn {
    outer_attrs: Vec<Attribute>,
    inner_attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    brace_token: Brace,
    body: TokenStream,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let outer_attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        if input.peek(syn::Token![;]) {
            return Err(syn::Error::new(
                input.span(),
                "`#[with_snapshot]` wraps a function body, and this function has none: \
                 put it on the implementations of this trait method",
            ));
        }
        let content;
        let brace_token = syn::braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let body: TokenStream = content.parse()?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function"));
        }
        Ok(MaybeItemFn {
            outer_attrs,
            inner_attrs,
            vis,
            sig,
            brace_token,
            body,
        })
    }
}

/// Expands one annotated function.
pub(crate) fn expand(args: Args, item: MaybeItemFn) -> syn::Result<TokenStream> {
    let sig = &item.sig;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span,
            "`#[with_snapshot]` cannot wrap a `const fn`: taking a snapshot is I/O, which a \
             `const fn` cannot do; remove `const`",
        ));
    }
    let (ret_ty, ret_span) = match &sig.output {
        ReturnType::Type(_, ty) => (ty.as_ref(), ty.span()),
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                "`#[with_snapshot]` needs the function to return a `Result`: a failed snapshot \
                 is returned as its error (fail closed), and its `Ok`/`Err` is recorded as the \
                 outcome of the call",
            ));
        }
    };
    if sig.asyncness.is_none() && returns_future(ret_ty) {
        return Err(syn::Error::new_spanned(
            ret_ty,
            "`#[with_snapshot]` cannot wrap a function that returns a future (the shape \
             `#[async_trait]` gives an `async fn`): the snapshot would be taken when the future \
             is created, not when it runs; write a native `async fn` (async fns in traits are \
             stable) or annotate an inherent `async fn` that this method calls",
        ));
    }

    // The paths carry the return type's span: the bound checked on the return type is then
    // reported on it.
    let private = |span: proc_macro2::Span| {
        let krate = match &args.krate {
            Some(path) => respan(path.to_token_stream(), span),
            None => quote_spanned!(span=> ::snapshot),
        };
        quote_spanned!(span=> #krate::__private)
    };
    let p = private(ret_span);
    let ret = erase_impl_trait(ret_ty);

    let id = entity_id::find(args.id.as_ref(), &args.entity.value(), &sig.inputs)?;
    let id_closure = match &id {
        EntityId::Expr(expr) => {
            let p = private(expr.span());
            quote_spanned!(expr.span()=> || #p::entity_id(&(#expr)))
        }
        EntityId::Param(ident) => {
            let p = private(ident.span());
            quote_spanned!(ident.span()=> || #p::entity_id(&#ident))
        }
        EntityId::None => quote!(|| ::core::option::Option::None),
    };
    let manager = match &args.manager {
        Some(expr) => {
            let p = private(expr.span());
            quote_spanned!(expr.span()=> #p::explicit(&(#expr)))
        }
        None => quote!(#p::installed()),
    };
    let (operation, entity) = (&args.operation, &args.entity);
    let on_error = match args.on_error {
        OnError::Fail => quote!(#p::OnError::Fail),
        OnError::Continue => quote!(#p::OnError::Continue),
    };
    let fn_name = sig.ident.to_string();
    let call = quote! {
        #p::Call {
            operation: #operation,
            entity: #entity,
            on_error: #on_error,
            function: ::core::concat!(::core::module_path!(), "::", #fn_name),
        }
    };

    let mut body = Group::new(Delimiter::Brace, item.body.clone());
    body.set_span(item.brace_token.span.join());
    // One call (`fail_closed`/`keep_going`) carries the only bound on the return type, spanned
    // on that type: a wrong return type is one error, in the right place.
    let ops = match args.on_error {
        OnError::Fail => quote_spanned!(ret_span=> #p::fail_closed::<#ret>()),
        OnError::Continue => quote_spanned!(ret_span=> #p::keep_going::<#ret>()),
    };
    let wrapped = if sig.asyncness.is_some() {
        quote_spanned! {ret_span=>
            #p::run_async::<#ret, _, _>(
                #p::begin_async(#manager, #call, #id_closure),
                async move #body,
                #ops,
            )
            .await
        }
    } else {
        quote_spanned! {ret_span=>
            #p::run::<#ret, _>(#p::begin(#manager, #call, #id_closure), move || #body, #ops)
        }
    };

    let MaybeItemFn {
        outer_attrs,
        inner_attrs,
        vis,
        sig,
        brace_token,
        ..
    } = &item;
    let mut out = quote!(#(#outer_attrs)* #vis #sig);
    brace_token.surround(&mut out, |tokens| {
        tokens.extend(quote!(#(#inner_attrs)*));
        tokens.extend(wrapped);
    });
    Ok(out)
}

/// Gives every token the span `span`.
fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// The return type with every `impl Trait` replaced by `_`, to name it inside the body.
fn erase_impl_trait(ty: &Type) -> Type {
    struct Eraser;
    impl syn::visit_mut::VisitMut for Eraser {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::ImplTrait(t) = ty {
                *ty = Type::Infer(syn::TypeInfer {
                    underscore_token: syn::Token![_](t.span()),
                });
            } else {
                syn::visit_mut::visit_type_mut(self, ty);
            }
        }
    }
    let mut ty = ty.clone();
    syn::visit_mut::VisitMut::visit_type_mut(&mut Eraser, &mut ty);
    ty
}

/// Whether a (non-async) function's return type is a future: `Pin<Box<dyn Future…>>` (what
/// `#[async_trait]` writes), `BoxFuture`, `impl Future…`.
fn returns_future(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => {
                i == "Future" || i == "BoxFuture" || i == "LocalBoxFuture"
            }
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    match ty {
        Type::ImplTrait(_) | Type::TraitObject(_) => walk(ty.to_token_stream()),
        Type::Path(p) => {
            p.path.segments.last().is_some_and(|seg| {
                seg.ident == "Pin" || seg.ident == "BoxFuture" || seg.ident == "LocalBoxFuture"
            }) && walk(ty.to_token_stream())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn futures_are_recognised() {
        let yes: Vec<Type> = vec![
            parse_quote!(Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'async_trait>>),
            parse_quote!(::core::pin::Pin<Box<dyn ::core::future::Future<Output = R>>>),
            parse_quote!(BoxFuture<'static, Result<()>>),
            parse_quote!(impl Future<Output = Result<()>>),
        ];
        let no: Vec<Type> = vec![
            parse_quote!(Result<(), E>),
            parse_quote!(Result<Pin<Box<u8>>, E>),
            parse_quote!(io::Result<FutureValue>),
            parse_quote!(impl Iterator<Item = u8>),
        ];
        for ty in yes {
            assert!(returns_future(&ty), "{}", ty.to_token_stream());
        }
        for ty in no {
            assert!(!returns_future(&ty), "{}", ty.to_token_stream());
        }
    }

    #[test]
    fn signature_comes_out_unchanged() -> syn::Result<()> {
        let args: Args = parse_quote!("delete", "measure");
        let item: MaybeItemFn = syn::parse2(quote! {
            /// Docs.
            #[inline]
            pub(crate) fn delete<'a, T: Clone>(&'a mut self, id: T) -> Result<(), E>
            where
                T: Display,
            {
                #![allow(unused)]
                this is not parsed
            }
        })?;
        let out = expand(args, item)?.to_string();
        let sig = quote! {
            #[doc = r" Docs."]
            #[inline]
            pub(crate) fn delete<'a, T: Clone>(&'a mut self, id: T) -> Result<(), E>
            where
                T: Display,
        }
        .to_string();
        assert!(out.starts_with(&sig), "{out}");
        assert!(out.contains("# ! [allow (unused)]"), "{out}");
        assert!(out.contains("this is not parsed"), "{out}");
        assert!(out.contains(":: snapshot :: __private :: run"), "{out}");
        Ok(())
    }
}
