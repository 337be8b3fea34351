"""Administrative regions (GB/T 2260) and each county's poverty status."""
