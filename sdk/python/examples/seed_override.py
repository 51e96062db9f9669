# Emergency override for quarter-end closing
override_token = client.request_override(
    action="financial_report",
    justification="Q4 10-K filing deadline - SEC required",
    duration_hours=4,
    requested_by="[email protected]"
)
# This bypasses normal dual approval for 4 hours
response = client.execute(
    action="financial_report",
    parameters=report_data,
    override_token=override_token
)
