//! [`oneof!`](crate::oneof): the conversions between a prost `oneof` wrapper message and
//! its variants, so a protocol's messages need no hand-written `From` impls.

/// Converts between a prost message wrapping a `oneof` and the oneof's variants.
///
/// For a message `KvRequest { oneof kind { Get get = 1; Put put = 2; } }`, prost-build
/// generates `struct KvRequest { kind: Option<kv_request::Kind> }` and
/// `enum kv_request::Kind { Get(Get), Put(Put) }`: the oneof's enum is named after the
/// oneof field in UpperCamelCase, in a module named after the message in snake_case,
/// and each variant after its field. Then
///
/// ```text
/// duologue::oneof!(KvRequest, kind: kv_request::Kind { Get(Get), Put(Put) });
/// ```
///
/// implements, in the calling crate:
/// - `From<Get> for KvRequest` (and `Put`), so `remote.cast(Get { .. })` and
///   `reply.send(Put { .. })` take the variant;
/// - `From<kv_request::Kind> for KvRequest`;
/// - `TryFrom<KvRequest> for Get` (and `Put`), giving the message back when it holds
///   another variant (or none).
///
/// Any other fields of the wrapper get their defaults. List each variant type once:
/// a oneof with two fields of the same type can have a `From` for only one of them.
///
/// ```
/// // What prost-build generates for
/// // `message KvRequest { oneof kind { Get get = 1; Put put = 2; } }`:
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct KvRequest {
///     #[prost(oneof = "kv_request::Kind", tags = "1, 2")]
///     pub kind: Option<kv_request::Kind>,
/// }
/// pub mod kv_request {
///     #[derive(Clone, PartialEq, prost::Oneof)]
///     pub enum Kind {
///         #[prost(message, tag = "1")]
///         Get(super::Get),
///         #[prost(message, tag = "2")]
///         Put(super::Put),
///     }
/// }
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Get {
///     #[prost(string, tag = "1")]
///     pub key: String,
/// }
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Put {
///     #[prost(string, tag = "1")]
///     pub key: String,
///     #[prost(bytes = "vec", tag = "2")]
///     pub value: Vec<u8>,
/// }
///
/// duologue::oneof!(KvRequest, kind: kv_request::Kind { Get(Get), Put(Put) });
///
/// # fn main() {
/// let request = KvRequest::from(Get { key: "a".into() });
/// assert_eq!(request.kind, Some(kv_request::Kind::Get(Get { key: "a".into() })));
/// assert_eq!(Get::try_from(request.clone()), Ok(Get { key: "a".into() }));
/// assert_eq!(Put::try_from(request.clone()), Err(request));
/// # }
/// ```
#[macro_export]
macro_rules! oneof {
    (
        $wrapper:ty, $field:ident : $kind:path {
            $($variant:ident ( $ty:ty )),+ $(,)?
        }
    ) => {
        impl ::core::convert::From<$kind> for $wrapper {
            // The wrapper may have fields besides the oneof.
            #[allow(clippy::needless_update)]
            fn from(kind: $kind) -> Self {
                Self {
                    $field: ::core::option::Option::Some(kind),
                    ..::core::default::Default::default()
                }
            }
        }
        $(
            impl ::core::convert::From<$ty> for $wrapper {
                #[allow(clippy::needless_update)]
                fn from(variant: $ty) -> Self {
                    // An alias, because a `path` fragment cannot be extended by `::`.
                    type Kind = $kind;
                    Self {
                        $field: ::core::option::Option::Some(Kind::$variant(variant)),
                        ..::core::default::Default::default()
                    }
                }
            }

            impl ::core::convert::TryFrom<$wrapper> for $ty {
                type Error = $wrapper;

                fn try_from(
                    mut wrapper: $wrapper,
                ) -> ::core::result::Result<Self, $wrapper> {
                    type Kind = $kind;
                    match wrapper.$field.take() {
                        ::core::option::Option::Some(Kind::$variant(variant)) => {
                            ::core::result::Result::Ok(variant)
                        }
                        other => {
                            wrapper.$field = other;
                            ::core::result::Result::Err(wrapper)
                        }
                    }
                }
            }
        )+
    };
}
