package main

import "testing"

func TestZZTmpExportDemo(t *testing.T) {
	code, out := runCommand(t, newExport(), "--data-dir", "../../data", "-o", "/tmp/demo.zip", "--principals", "../../examples/principals.yaml", "--manifest", "../../examples/manifests/sox-financial.json")
	t.Log(code, out)
	code, out = runCommand(t, verifyCmd(), "/tmp/demo.zip")
	t.Log(code, out)
}
