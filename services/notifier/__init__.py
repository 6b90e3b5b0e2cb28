"""The notifier: tells merchants about their payments by signed webhooks, retried, every attempt recorded."""
