package filter_test

import (
	"fmt"

	"github.com/seed-3c836eab/roster/pkg/filter"
)

func ExampleCompile() {
	f, err := filter.Compile(`Department is "Accounts" and $Country ne "US"`)
	if err != nil {
		panic(err)
	}
	fmt.Println(f)
	fmt.Println(f.CEL())

	_, err = filter.Compile(`Department = "Accounts"`)
	fmt.Println(err)
	// Output:
	// Department is "Accounts" and $Country ne "US"
	// (("Department" in props && props["Department"] == "Accounts") && !("$Country" in props && props["$Country"] == "US"))
	// filter: syntax error at offset 11: expected "is", "eq", "ne" or "in", found "="
}

func ExampleFilter_Matches() {
	f, err := filter.Compile(`hasRoles ["operator"] and $Country in 'UK' 'FR'`)
	if err != nil {
		panic(err)
	}
	alice := map[string]string{"$Country": "FR", "$Roles": `"admin","operator"`}
	bob := map[string]string{"$Country": "US", "$Roles": `"operator"`}
	fmt.Println(f.Matches(alice), f.Matches(bob))
	// Output: true false
}

func ExampleCompileCEL() {
	f, err := filter.CompileCEL(`props.exists(k, k.startsWith("Desk")) && "trader" in roles`)
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Matches(map[string]string{"Desk7": "", "$Roles": `"trader"`}))
	// Output: true
}

func ExampleRolesToString() {
	fmt.Println(filter.RolesToString([]string{"client", "admin", "client", `say "hi"`}))
	// Output: "admin","client","say \"hi\""
}

func ExampleStringToRoles() {
	roles, err := filter.StringToRoles(`"admin","say \"hi\""`)
	fmt.Printf("%q %v\n", roles, err)
	_, err = filter.StringToRoles(`"admin", "client"`)
	fmt.Println(err)
	// Output:
	// ["admin" "say \"hi\""] <nil>
	// roles: expected '"' at offset 8
}

func ExampleFilter_Plan() {
	f, err := filter.Compile(`($Country is "UK" or $Country is "FR") and hasRoles ["trader"] and Desk ne "7"`)
	if err != nil {
		panic(err)
	}
	for _, term := range f.Plan().Terms {
		fmt.Printf("%+v\n", term)
	}
	// Output:
	// [{Key:$Country Values:[UK] Role:false} {Key:$Roles Values:[trader] Role:true}]
	// [{Key:$Country Values:[FR] Role:false} {Key:$Roles Values:[trader] Role:true}]
}

func ExampleFilter_Redacted() {
	f, err := filter.Compile(`(Email is "alice@example.com" or $Country in 'UK' 'FR') and hasRoles ["trader"] and has Desk`)
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Redacted())
	// Output: (Email is ? or $Country in [?, ?]) and hasRoles ["trader"] and has Desk
}

func ExampleEscapeString() {
	name := `O'Brien "Bob"`
	f, err := filter.Compile(`Name is '` + filter.EscapeString(name) + `'`)
	if err != nil {
		panic(err)
	}
	fmt.Println(f)
	fmt.Println(f.Matches(map[string]string{"Name": name}))
	// Output:
	// Name is 'O\'Brien \"Bob\"'
	// true
}
