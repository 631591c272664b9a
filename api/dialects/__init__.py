"""The seed platforms' wire formats, one module each, served under /compat/<name>."""

from api.dialects import bunce, cocomail, emailsendx

DIALECTS = (cocomail, bunce, emailsendx)
