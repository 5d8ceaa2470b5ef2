"""Django's PostgreSQL backend with a health check that costs no round trip
on a healthy idle connection (``ENGINE = "core.postgresql"``)."""
