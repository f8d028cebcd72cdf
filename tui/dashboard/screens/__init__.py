"""The dashboard's screens: jobs (home), job detail, enqueue form, help, confirmation."""
