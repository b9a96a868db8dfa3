module github.com/seed73091bf1/connpool/bench

go 1.25.0

require (
	github.com/buraksezer/connpool v0.6.0
	github.com/fatih/pool v3.0.0+incompatible
	github.com/jackc/puddle/v2 v2.2.3
	github.com/seed73091bf1/connpool v0.0.0
	github.com/silenceper/pool v1.0.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	storj.io/drpc v1.0.0
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	github.com/hashicorp/go-multierror v1.1.1 // indirect
	github.com/konsorten/go-windows-terminal-sequences v1.0.1 // indirect
	github.com/sirupsen/logrus v1.4.2 // indirect
	github.com/zeebo/errs v1.2.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.1.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)

replace github.com/seed73091bf1/connpool => ../
