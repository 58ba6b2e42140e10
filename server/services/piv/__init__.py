"""PIV smartcards: the service's own CA, what a card signs and how it is stored, enrolment with
a proof of possession, the login factor and the revocation list; ``service`` joins them."""
