"""Providers behind small contracts: SMTP, Twilio, HubSpot, webhook CRM, outbox."""
