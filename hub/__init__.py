"""`watchtower hub`: one /api/v1 (and the pages) over the correlators of many PMTA hosts.

Stateless: every request fans out to the daemons concurrently and merges their answers, as
Thanos Query does over its sidecars. See docs/scaling.md.
"""
