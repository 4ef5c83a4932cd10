package auth

import (
	"encoding/base64"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// Bcrypt costs --bcrypt-cost accepts (etcd's range).
const (
	BcryptCostMin     = bcrypt.MinCost
	BcryptCostMax     = bcrypt.MaxCost
	BcryptCostDefault = bcrypt.DefaultCost
)

// HashPassword hashes a password for a user add or password change, as
// the request into the log carries it (base64 of the bcrypt hash): the
// salt is random, so the hash is made once, here, and never at apply.
func HashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

// PasswordMatches reports whether password is the one hash was made from.
func PasswordMatches(hash []byte, password string) bool {
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}
