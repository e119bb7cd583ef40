"""The airtime rail: buying prepaid airtime for a phone number (Africa's Talking's Airtime API)."""
