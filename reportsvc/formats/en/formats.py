# How Django renders dates and times in the admin (read-only fields, lists): the same
# pattern as reportsvc.moments.moment, "2026-11-26 09:26:44 UTC".
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
