/* SPDX-License-Identifier: Apache-2.0 */
/* Config section: authorization policies (see config_authz.c). */
#ifndef ZW_APP_CONFIG_AUTHZ_H
#define ZW_APP_CONFIG_AUTHZ_H

struct app_authz_config {
    int placeholder; /* filled in as the section grows */
};

#endif
