"""The SendGrid adapter: HTTP and errors (client), suppression lists (suppressions), the signed
Event Webhook (webhook). Nothing here decides consent; the services do."""
