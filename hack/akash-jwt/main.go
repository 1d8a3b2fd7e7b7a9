// akash-jwt mints tenant JWTs with Akash's own signer (chain-sdk go/util/jwt), so that our verifier is
// checked against theirs, not against itself.
//
//	akash-jwt ALG < request.json
//
// request.json: {"mnemonic": "...", "claims": {...}}; ALG is ES256K or ES256KADR36. Prints the token.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/cosmos/cosmos-sdk/codec"
	codectypes "github.com/cosmos/cosmos-sdk/codec/types"
	cryptocodec "github.com/cosmos/cosmos-sdk/crypto/codec"
	"github.com/cosmos/cosmos-sdk/crypto/hd"
	"github.com/cosmos/cosmos-sdk/crypto/keyring"
	gojwt "github.com/golang-jwt/jwt/v5"

	akjwt "pkg.akt.dev/go/util/jwt"
)

type request struct {
	Mnemonic string          `json:"mnemonic"`
	Claims   json.RawMessage `json:"claims"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "akash-jwt: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: akash-jwt ES256K|ES256KADR36 < request.json")
	}
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail("reading the request: %v", err)
	}
	registry := codectypes.NewInterfaceRegistry()
	cryptocodec.RegisterInterfaces(registry)
	kr := keyring.NewInMemory(codec.NewProtoCodec(registry))
	record, err := kr.NewAccount("tenant", req.Mnemonic, "", "m/44'/118'/0'/0/0", hd.Secp256k1)
	if err != nil {
		fail("importing the mnemonic: %v", err)
	}
	addr, err := record.GetAddress()
	if err != nil {
		fail("address: %v", err)
	}
	method := gojwt.GetSigningMethod(os.Args[1])
	if method == nil {
		fail("unknown algorithm %q", os.Args[1])
	}
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(fmt.Sprintf(`{"alg":"%s","typ":"JWT"}`, os.Args[1])))
	data := header + "." + enc.EncodeToString(req.Claims)
	sig, err := method.Sign(data, akjwt.NewSigner(kr, addr))
	if err != nil {
		fail("signing: %v", err)
	}
	fmt.Println(data + "." + enc.EncodeToString(sig))
}
