"""Notify: signed webhooks to prefectures about what happens in their region."""
