"""The worker's runtime: its process and slots, the guard every claimed run ends through,
heartbeats, the scheduler lease and the leader's jobs, recovery and housekeeping."""
