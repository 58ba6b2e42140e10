"""The OpenID Provider's domain side: registered relying parties, the levels as ``acr`` URIs,
the authorization request's parameters, and the codes and tokens issued."""
