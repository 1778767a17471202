// gitops-check runs the project's GitOps health logic the way Argo CD and Flux do, for the tests:
//
//	gitops-check argocd <dir>   run <dir>/health.lua over the cases of <dir>/health_test.yaml with gopher-lua, the
//	                            Lua engine Argo CD embeds, the object converted to Lua tables as Argo CD converts it
//	gitops-check kstatus        read a JSON list of objects on stdin and print, per object, the kstatus status
//	                            (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, what Flux's health checks use)
//
// It prints one JSON document and exits non-zero only when it could not run.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type testCase struct {
	HealthStatus healthStatus `json:"healthStatus"`
	InputPath    string       `json:"inputPath"`
}

type result struct {
	InputPath string       `json:"inputPath"`
	Expected  healthStatus `json:"expected"`
	Got       healthStatus `json:"got"`
}

// toLua converts decoded JSON into Lua values: objects and arrays become tables (arrays 1-based), as Argo CD's
// decodeValue does.
func toLua(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	case []interface{}:
		table := L.NewTable()
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func argocd(dir string) ([]result, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return nil, err
	}
	var tests struct {
		Tests []testCase `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		return nil, err
	}
	var results []result
	for _, test := range tests.Tests {
		input, err := os.ReadFile(filepath.Join(dir, test.InputPath))
		if err != nil {
			return nil, err
		}
		var obj map[string]interface{}
		if err := yaml.Unmarshal(input, &obj); err != nil {
			return nil, err
		}
		L := lua.NewState(lua.Options{SkipOpenLibs: true})
		for _, lib := range []struct {
			name string
			open lua.LGFunction
		}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}} {
			L.Push(L.NewFunction(lib.open))
			L.Push(lua.LString(lib.name))
			L.Call(1, 0)
		}
		L.SetGlobal("obj", toLua(L, obj))
		if err := L.DoString(string(script)); err != nil {
			return nil, fmt.Errorf("%s: %w", test.InputPath, err)
		}
		table, ok := L.Get(-1).(*lua.LTable)
		if !ok {
			return nil, fmt.Errorf("%s: the script returned no table", test.InputPath)
		}
		got := healthStatus{
			Status:  table.RawGetString("status").String(),
			Message: table.RawGetString("message").String(),
		}
		L.Close()
		results = append(results, result{InputPath: test.InputPath, Expected: test.HealthStatus, Got: got})
	}
	return results, nil
}

func kstatus() ([]map[string]string, error) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, err
	}
	var objects []map[string]interface{}
	// apimachinery's decoder keeps whole numbers int64, as objects read from the API server have them.
	if err := utiljson.Unmarshal(raw, &objects); err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, obj := range objects {
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			return nil, err
		}
		out = append(out, map[string]string{"status": res.Status.String(), "message": res.Message})
	}
	return out, nil
}

func main() {
	var out interface{}
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "argocd":
		out, err = argocd(os.Args[2])
	case len(os.Args) == 2 && os.Args[1] == "kstatus":
		out, err = kstatus()
	default:
		err = fmt.Errorf("usage: gitops-check argocd <dir> | gitops-check kstatus < objects.json")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
