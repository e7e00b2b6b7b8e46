"""Auth: short-lived scoped tokens minted by a control service and checked before mutations.

So far: the pure token core (:mod:`p2pworld.auth.token`). The control service, refresh and
enforcement on every mutation path are the auth issue's next steps.
"""
