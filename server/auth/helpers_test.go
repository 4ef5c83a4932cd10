package auth

import "encoding/base64"

func decodeForTest(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
