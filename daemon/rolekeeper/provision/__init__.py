"""Role mailboxes, their access and send-as: provisioners chosen by [provisioning].

`base` holds the protocols the reconciler sees; `build.build_access` is the one place that
picks the concrete ones from the settings.
"""
