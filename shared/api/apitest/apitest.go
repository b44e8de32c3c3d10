// Package apitest checks real answers of the quiccast API (shared/api)
// against its OpenAPI document, with kin-openapi. Only tests import it.
package apitest

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/quiccast/quiccast/shared/api"
)

var (
	once   sync.Once
	doc    *openapi3.T
	docErr error
)

// Doc is api.OpenAPI, loaded and validated.
func Doc(t testing.TB) *openapi3.T {
	t.Helper()
	once.Do(func() {
		doc, docErr = openapi3.NewLoader().LoadFromData(api.OpenAPI)
		if docErr == nil {
			docErr = doc.Validate(context.Background())
		}
	})
	if docErr != nil {
		t.Fatalf("openapi.yaml: %v", docErr)
	}
	return doc
}

// Check fails t unless an answer (status, header, body) to method on the
// document's path template (as in openapi.yaml: "/broadcasts/{name}") is
// one the document describes: a documented status, content type and a
// body that fits its schema (additionalProperties: false included).
func Check(t testing.TB, method, path string, status int, header http.Header, body []byte) {
	t.Helper()
	d := Doc(t)
	item := d.Paths.Value(path)
	if item == nil {
		t.Fatalf("openapi.yaml has no path %s", path)
	}
	op := item.GetOperation(method)
	if op == nil {
		t.Fatalf("openapi.yaml has no %s %s", method, path)
	}
	req, _ := http.NewRequest(method, "http://node"+api.Prefix+path, nil)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req,
			Route:   &routers.Route{Spec: d, Path: path, PathItem: item, Method: method, Operation: op},
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  status,
		Header:  header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s answered %d %s, not as openapi.yaml says: %v", method, path, status, bytes.TrimSpace(body), err)
	}
}
