package checks

import (
	"context"
	"errors"
	"fmt"
)

// aliasTarget names what an alias check mirrors, for its output.
func (c *Check) aliasTarget() string {
	switch {
	case c.def.AliasNode != "" && c.def.AliasService != "":
		return fmt.Sprintf("service %q on node %q", c.def.AliasService, c.def.AliasNode)
	case c.def.AliasNode != "":
		return fmt.Sprintf("node %q", c.def.AliasNode)
	default:
		return fmt.Sprintf("service %q", c.def.AliasService)
	}
}

// runAlias mirrors the AliasSource's status until ctx is done. A failed
// watch is reported critical, as Consul documents, and retried.
func (c *Check) runAlias(ctx context.Context) {
	target := c.aliasTarget()
	fn := func(status string) {
		switch status {
		case StatusPassing:
			c.publish(ctx, StatusPassing, fmt.Sprintf("All checks of %s are passing", target))
		case StatusWarning:
			c.publish(ctx, StatusWarning, fmt.Sprintf("Checks of %s are warning", target))
		case StatusCritical:
			c.publish(ctx, StatusCritical, fmt.Sprintf("Checks of %s are critical", target))
		default:
			c.publish(ctx, StatusCritical, fmt.Sprintf("Alias of %s got unknown status %q", target, status))
		}
	}
	for {
		err := c.alias.Watch(ctx, c.def.AliasNode, c.def.AliasService, fn)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch ended")
		}
		c.logger.Warn("alias watch failed", "target", target, "error", err)
		c.publish(ctx, StatusCritical, fmt.Sprintf("Alias watch of %s failed: %v", target, err))
		if !c.sleep(ctx, AliasRetryWait) {
			return
		}
	}
}
