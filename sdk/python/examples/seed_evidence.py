# Generate SOX compliance report
evidence = client.export_evidence_bundle(
    start_date="2024-01-01",
    end_date="2024-12-31",
    compliance_framework="SOX",
    include_approvals=True,
    include_rejections=True
)
# Creates tamper-proof ZIP with:
# - All journal entry approvals with cryptographic signatures
# - Dual approval records for financial reports
# - Audit trail with SHA-256 chain integrity
# - Compliance mapping document
